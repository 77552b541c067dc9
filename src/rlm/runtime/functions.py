"""Host functions: plain Python callables of the caller that every kernel of the tree can call.

``rlm.run(task, functions=[fn])`` or ``rlm.Session(functions=[fn])`` hands callables to the
orchestrator. They run **in the orchestrator process**, so they can close over what a kernel
could never reach (a database handle, a counter, a client with its own credentials); each
kernel of the tree gets a stub of the same name, signature and docstring that sends a
``function_request`` over the signed control channel and awaits the result. Arguments and
results cross as JSON: the arguments are bound to the signature and validated by pydantic
(``validate_call``), the result must be JSON-serialisable, and an exception raised by the
function comes back to the cell as ``rlm.FunctionError`` with its type and message. A sync
function runs in a worker thread, so a slow one does not stop the orchestrator. Each call is
one line of the caller's ``function_calls.jsonl``.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import inspect
import json
import keyword
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError, validate_call
from pydantic_core import PydanticSerializationError, to_jsonable_python

from rlm.agent import events as ev
from rlm.control.dispatch import Request
from rlm.errors import ConfigError, FunctionError, RLMError
from rlm.logs.writer import now_iso
from rlm.schema.control import FunctionReply, FunctionRequest, encode_error

if TYPE_CHECKING:
    from rlm.agent.loop import Agent

__all__ = ["FUNCTION_LOG", "HostFunction", "HostFunctions", "load_functions"]

#: The file, in the calling agent's session folder, with one line per host-function call.
FUNCTION_LOG = "function_calls.jsonl"
_PREVIEW = 200
_CELL_ENDED = (
    "the cell that called this host function has ended: await the call (or the task that "
    "makes it) before the cell ends"
)

Reply = tuple[dict[str, Any], list[bytes]]


@dataclass
class HostFunction:
    """One registered callable and what a kernel's stub is built from."""

    name: str
    function: Callable[..., Any]
    validated: Callable[..., Any]
    signature: str
    """``(a: int, b: str = 'x') -> int``: annotations as text, as the kernel's stub shows it."""
    doc: str

    @property
    def summary(self) -> str:
        lines = self.doc.strip().splitlines()
        return lines[0].strip() if lines else ""


def _describe(function: Callable[..., Any]) -> HostFunction:
    name = getattr(function, "__name__", "")
    if not callable(function) or not name.isidentifier() or keyword.iskeyword(name):
        raise ConfigError(f"functions: {function!r} is not a named function")
    if name.startswith("_") or name in ("rlm", "asyncio"):
        raise ConfigError(f"functions: {name!r} cannot be a kernel name (private or taken)")
    try:
        signature = inspect.signature(function)
        validated = validate_call(function)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"functions: {name}: {exc}") from None
    params = [
        param.replace(annotation=_annotation_text(param.annotation))
        for param in signature.parameters.values()
    ]
    shown = signature.replace(
        parameters=params, return_annotation=_annotation_text(signature.return_annotation)
    )
    return HostFunction(name, function, validated, str(shown), inspect.getdoc(function) or "")


class _Text(str):
    """Annotation text that ``inspect`` prints as it is (not quoted, as a ``str`` would be)."""

    def __repr__(self) -> str:
        return str(self)


def _annotation_text(annotation: Any) -> Any:
    """An annotation as plain text (a kernel may lack the type; its stub keeps it as text)."""
    if annotation is inspect.Parameter.empty:
        return annotation
    if isinstance(annotation, str):
        return _Text(annotation)
    if isinstance(annotation, type):
        return _Text(annotation.__qualname__)
    return _Text(repr(annotation).replace("typing.", ""))


def load_functions(specs: Iterable[str]) -> list[Callable[..., Any]]:
    """The functions named by ``rlm --functions``: each spec is a ``.py`` file or an
    importable module; it exports its functions by a ``register()`` hook returning them, or
    else by ``__all__``. Any failure is one ``ConfigError`` line naming the spec."""
    found: list[Callable[..., Any]] = []
    for spec in specs:
        module = _import(spec)
        try:
            if callable(getattr(module, "register", None)):
                exported = list(module.register())
            elif isinstance(getattr(module, "__all__", None), (list, tuple)):
                exported = [getattr(module, name) for name in module.__all__]
            else:
                raise ConfigError(f"--functions: {spec} defines neither register() nor __all__")
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"--functions: {spec}: {type(exc).__name__}: {exc}") from None
        bad = [repr(item) for item in exported if not callable(item)]
        if bad:
            raise ConfigError(f"--functions: {spec} exports non-callables: {', '.join(bad)}")
        found.extend(exported)
    return found


def _import(spec: str) -> Any:
    path = Path(spec)
    try:
        if spec.endswith(".py") or path.is_file():
            if not path.is_file():
                raise ConfigError(f"--functions: no such file: {spec}")
            name = f"rlm_functions_{path.stem}"
            loaded = importlib.util.spec_from_file_location(name, path)
            if loaded is None or loaded.loader is None:
                raise ConfigError(f"--functions: cannot load {spec}")
            module = importlib.util.module_from_spec(loaded)
            sys.modules[name] = module
            loaded.loader.exec_module(module)
            return module
        return importlib.import_module(spec)
    except ConfigError:
        raise
    except ModuleNotFoundError as exc:
        raise ConfigError(f"--functions: {spec}: no module named {exc.name!r}") from None
    except BaseException as exc:  # the module's own code failed (SyntaxError, SystemExit, ...)
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise ConfigError(f"--functions: {spec}: {type(exc).__name__}: {exc}") from None


class HostFunctions:
    """The functions of one orchestrator, and the ``function_request`` handler."""

    def __init__(self, functions: Iterable[Callable[..., Any]] = ()) -> None:
        self.by_name: dict[str, HostFunction] = {}
        for function in functions:
            described = _describe(function)
            if described.name in self.by_name:
                raise ConfigError(f"functions: two functions named {described.name!r}")
            self.by_name[described.name] = described

    def __bool__(self) -> bool:
        return bool(self.by_name)

    def bootstrap_source(self) -> str:
        """Kernel source that defines every function's stub in the user namespace."""
        if not self.by_name:
            return ""
        specs = [
            {"name": f.name, "signature": f.signature, "doc": f.doc} for f in self.by_name.values()
        ]
        return (
            "import rlm.inkernel.functions\n"
            f"rlm.inkernel.functions.install({json.dumps(specs)!r})\n"
        )

    def prompt_section(self) -> str:
        """The system prompt's list of the functions (signature and first docstring line)."""
        if not self.by_name:
            return ""
        lines = [
            f"- `await {f.name}{f.signature}`" + (f": {f.summary}" if f.summary else "")
            for f in self.by_name.values()
        ]
        return (
            "\n## Host functions\n"
            "These functions are defined in your ipython kernel; they run in the host program "
            "(arguments and results as JSON) and raise `rlm.FunctionError` when they fail. "
            "`help(name)` shows the full docstring.\n" + "\n".join(lines) + "\n"
        )

    async def handle(self, agent: Agent, req: Request) -> Reply:
        """Check one request, call the function, log the call, and build the reply."""
        try:
            request: FunctionRequest = FunctionRequest.parse(req.content, "function_request")
        except ConfigError as exc:
            return _error(FunctionError(str(exc)))
        found = self.by_name.get(request.name)
        if found is None:
            return _error(FunctionError(f"no host function named {request.name!r}"))
        if request.cell is not None and request.cell != agent.running_cell:
            return _error(FunctionError(_CELL_ENDED))
        current = asyncio.current_task()
        if current is not None:
            agent.adopt_cell_child(current)
        record: dict[str, Any] = {
            "name": found.name,
            "arguments": _preview(request.args, request.keywords),
        }
        started = time.monotonic()
        try:
            result = await self._call(found, request.args, request.keywords)
            value = to_jsonable_python(result)
        except asyncio.CancelledError:
            record["error"] = "cancelled"
            raise
        except PydanticSerializationError as exc:
            record["error"] = f"unserialisable result: {exc}"
            return _error(FunctionError(f"{found.name} returned {record['error']}"))
        except RLMError as exc:
            record["error"] = str(exc)
            return _error(exc if isinstance(exc, FunctionError) else FunctionError(str(exc)))
        finally:
            record["duration"] = round(time.monotonic() - started, 6)
            _append(agent, record)
            agent.emit(
                ev.HostFunctionFinished,
                name=found.name,
                duration=record["duration"],
                error=record.get("error"),
            )
        return FunctionReply(result=value).content(), []

    async def _call(self, found: HostFunction, args: list[Any], kwargs: dict[str, Any]) -> Any:
        try:
            inspect.signature(found.function).bind(*args, **kwargs)
        except TypeError as exc:
            raise FunctionError(f"{found.name}{found.signature}: {exc}") from None
        try:
            if inspect.iscoroutinefunction(found.function):
                return await found.validated(*args, **kwargs)
            result = await asyncio.to_thread(found.validated, *args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        except ValidationError as exc:
            names = list(inspect.signature(found.function).parameters)
            problems = "; ".join(f"{_where(e['loc'], names)}: {e['msg']}" for e in exc.errors())
            raise FunctionError(f"invalid arguments for {found.name}: {problems}") from None
        except Exception as exc:
            raise FunctionError(f"{found.name} raised {type(exc).__name__}: {exc}") from None


def _where(loc: tuple[Any, ...], names: list[str]) -> str:
    """A validation error's location with a positional index named by its parameter."""
    parts = [str(part) for part in loc]
    if loc and isinstance(loc[0], int) and 0 <= loc[0] < len(names):
        parts[0] = names[loc[0]]
    return ".".join(parts) or "arguments"


def _preview(args: list[Any], kwargs: dict[str, Any]) -> str:
    shown = [json.dumps(a, default=str)[:_PREVIEW] for a in args]
    shown += [f"{k}={json.dumps(v, default=str)[:_PREVIEW]}" for k, v in kwargs.items()]
    text = ", ".join(shown)
    return text if len(text) <= _PREVIEW else text[:_PREVIEW] + "…"


def _append(agent: Agent, record: dict[str, Any]) -> None:
    line = json.dumps({"timestamp": now_iso(), **record}, ensure_ascii=False, default=str)
    try:
        with open(agent.log.path / FUNCTION_LOG, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
    except OSError:
        pass


def _error(exc: BaseException) -> Reply:
    return encode_error(exc), []
