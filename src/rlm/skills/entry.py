"""Runtime side of skills: the shared console script and the callable-module helper.

Every skill declares ``<name> = "rlm.skill:cli"`` as its console script, so the CLI code lives
here once instead of being copied into each skill. The skill's ``__init__.py`` calls
:func:`make_callable` so that, inside the IPython kernel, ``await websearch(...)`` works on the
module itself. This module is imported inside the kernel and by every skill CLI, so it must stay
light: stdlib plus ``tyro`` (imported lazily, only by :func:`cli`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import inspect
import json
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SkillModule",
    "cli",
    "describe_run",
    "load_skills",
    "make_callable",
    "render_result",
    "signature_of",
]

class SkillModule(types.ModuleType):
    """A skill's package module that can be called like its ``run`` function.

    Assigned as ``module.__class__`` by :func:`make_callable`; ``run`` is looked up at call time
    so that reloading or patching ``module.run`` is honoured. ``__signature__`` is a class-level
    property (not a module global) so ``inspect.signature(skill)`` works without cluttering
    ``help(skill)``'s DATA section.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the skill's ``run``: ``await websearch(...)`` == ``await websearch.run(...)``."""
        return self.run(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        """``run``'s signature, for ``inspect.signature(skill)`` and IPython's ``skill?``."""
        return signature_of(self.run)


def signature_of(run: Callable[..., Any]) -> inspect.Signature:
    """``run``'s signature with string annotations resolved when possible.

    Skills may use ``from __future__ import annotations``; resolving keeps ``list[str]`` from
    being shown as ``'list[str]'``. Falls back to the raw strings if resolution fails.
    """
    try:
        return inspect.signature(run, eval_str=True)
    except Exception:
        return inspect.signature(run)


def describe_run(run: Callable[..., Any]) -> str:
    """One-line signature such as ``async run(queries: list[str], k: int = 5) -> str``.

    The ``async`` prefix tells the prompt (and the model) whether the call needs ``await``.
    """
    prefix = "async " if inspect.iscoroutinefunction(run) else ""
    return f"{prefix}run{signature_of(run)}"


def make_callable(module_name: str) -> types.ModuleType:
    """Make the already-imported module ``module_name`` callable as its ``run`` function.

    Called at the end of a skill's ``__init__.py`` (``make_callable(__name__)``). Afterwards
    ``await skill(...)`` and ``skill.run(...)`` do the same and ``inspect.signature(skill)`` is
    ``run``'s signature. The module docstring becomes signature + call hint + package docstring
    + ``run``'s docstring, so ``help(skill)`` (how the model learns a skill) and ``skill?`` show
    everything in one place. Idempotent, so reloads are fine.
    """
    module = sys.modules[module_name]
    run = getattr(module, "run", None)
    if not callable(run):
        raise AttributeError(f"skill module {module_name!r} has no callable 'run'")
    if not isinstance(module, SkillModule):
        module.__class__ = SkillModule
    # A second call (reload, re-run) must not nest the generated docstring in a new one.
    own_doc = (module.__doc__ or "").strip()
    if module.__doc__ is not None and module.__doc__ == module.__dict__.get("_rlm_doc"):
        own_doc = module.__dict__.get("_rlm_package_doc", "")
    module.__dict__["_rlm_package_doc"] = own_doc
    call = "await " if inspect.iscoroutinefunction(run) else ""
    parts = [
        f"{module_name}{signature_of(run)}",
        f"Call as `{call}{module_name}(...)`, same as `{call}{module_name}.run(...)`.",
        own_doc,
        inspect.getdoc(run) or "",
    ]
    module.__doc__ = module.__dict__["_rlm_doc"] = "\n\n".join(part for part in parts if part)
    return module


def load_skills(names: Sequence[str], namespace: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Import each skill into ``namespace`` under its name; never raise for one bad skill.

    Used by the kernel bootstrap (:func:`rlm.skills.discovery.kernel_bootstrap_source`). Returns
    ``{"loaded": {name: signature}, "failed": {name: "ExcType: message"}}`` so the orchestrator
    can advertise only the skills that really work.
    """
    loaded: dict[str, str] = {}
    failed: dict[str, str] = {}
    for name in names:
        try:
            module = importlib.import_module(name)
            run = getattr(module, "run", None)
            if not callable(run):
                raise AttributeError(f"skill {name!r} has no callable 'run'")
            if not callable(module):
                module = make_callable(name)
            namespace[name] = module
            loaded[name] = describe_run(run)
        except BaseException as exc:  # a skill may even sys.exit() at import time
            if isinstance(exc, KeyboardInterrupt):
                raise
            failed[name] = f"{type(exc).__name__}: {exc}"
    return {"loaded": loaded, "failed": failed}


def _json_default(value: Any) -> Any:
    """Best-effort JSON for common result types (pydantic models, dataclasses, sets, paths)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def render_result(value: Any) -> str | None:
    """What the CLI prints for ``run``'s return value: text as is, ``None`` as nothing, else JSON.

    JSON keeps structured results machine-readable (``| jq``) for shell users and the model.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, default=_json_default, indent=2, ensure_ascii=False)


async def _await(awaitable: Any) -> Any:
    return await awaitable


def cli(args: Sequence[str] | None = None, prog: str | None = None) -> None:
    """Console-script entry point shared by every skill (``<name> = "rlm.skill:cli"``).

    The command name (``sys.argv[0]``) is the skill's import name, so one entry point serves all
    skills. tyro builds the whole CLI from ``run``: flags from its typed parameters, flag help
    from its Google-style ``Args:``, the description from the docstring's text (its ``Args:``
    and ``Returns:`` sections are not repeated there). Exceptions from ``run`` propagate on purpose: Python prints the traceback and
    exits with status 1, which is the most useful failure report for a shell user or a model.
    ``args``/``prog`` exist for tests; the console script passes neither.
    """
    import tyro  # lazy: keeps `import rlm.skills.entry` cheap inside the kernel

    name = prog or Path(sys.argv[0]).name
    name = name.removesuffix(".exe").removesuffix(".py").replace("-", "_")
    module = importlib.import_module(name)
    run = getattr(module, "run", None)
    if not callable(run):
        raise SystemExit(f"{name}: module {name!r} has no callable 'run' (not an rlm skill?)")
    argv = list(sys.argv[1:] if args is None else args)
    result = tyro.cli(run, prog=name, args=argv)
    if inspect.isawaitable(result):
        result = asyncio.run(_await(result))
    text = render_result(result)
    if text is not None:
        print(text)
