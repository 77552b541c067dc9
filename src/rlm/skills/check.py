"""The naming rules of a skill, and the check of a skill folder against them.

A skill's name is at once its folder, its distribution (``rlm-skill-<name>``), its import
package, its console script and a variable in every kernel, so the rules live here once:
:func:`rlm.skills.discovery.new_skill` (scaffolding), ``rlm skill check DIR`` and
``install.sh`` (which runs ``python -m rlm.skills.check DIR...`` from the rlm checkout
*before* installing anything, with any Python 3.11+) all apply them.

That is why this module needs only the standard library (``tomllib``; ``tomli`` on 3.10):
``install.sh`` runs it with ``PYTHONPATH`` on rlm's source, in an interpreter that has none
of rlm's dependencies.
"""

from __future__ import annotations

import argparse
import builtins
import keyword
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = [
    "CLI_ENTRY_POINT",
    "DIST_PREFIX",
    "canonical",
    "folder_problem",
    "main",
    "name_problem",
]

#: Normalized distribution-name prefix that marks a package as an rlm skill.
DIST_PREFIX = "rlm-skill-"

#: The console script every skill declares: one shared CLI (see :mod:`rlm.skills.entry`).
CLI_ENTRY_POINT = "rlm.skill:cli"

#: A skill name: a lowercase Python identifier.
NAME_RE = re.compile(r"[a-z][a-z0-9_]*")

#: Names bound in every IPython user namespace; a skill with one of them would clobber it.
RESERVED_NAMES = frozenset({"get_ipython", "display", "exit", "quit", "rlm"})


def canonical(name: str) -> str:
    """PEP 503 normalization, so ``rlm_skill.Foo`` and ``rlm-skill-foo`` compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a skill (one line), or None if it can.

    The name becomes a kernel variable and an import name, so beyond the lowercase-identifier
    format it must not be a keyword, a builtin, a standard-library module or a name IPython
    binds. (Whether some installed module already has the name depends on the environment;
    :func:`rlm.skills.discovery.validate_skill_name` adds that check for new skills.)
    """
    if not NAME_RE.fullmatch(name):
        return (
            f"invalid skill name {name!r}: use lowercase letters, digits and '_', "
            "starting with a letter"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"invalid skill name {name!r}: it is a Python keyword"
    if name in sys.stdlib_module_names:
        return f"invalid skill name {name!r}: it shadows the standard-library module"
    if hasattr(builtins, name):
        return f"invalid skill name {name!r}: it shadows the builtin {name!r}"
    if name in RESERVED_NAMES:
        return f"invalid skill name {name!r}: it is reserved in the kernel namespace"
    return None


def _shown(value: Any) -> str:
    """A TOML value as the ``(got '...')`` part of a message."""
    if value is None or value == "":
        return "<missing>"
    return value if isinstance(value, str) else repr(value)


def folder_problem(folder: Path) -> str | None:
    """The first naming rule of docs/skills.md that ``folder`` breaks (one line), or None.

    Rules are checked in the order of the docs' table (folder, distribution, package,
    console script): a later rule's message would only repeat an earlier mistake.
    """
    where = f"skill folder {folder}"
    name = folder.name
    if not NAME_RE.fullmatch(name):
        rule = "folder name <name> is a lowercase Python identifier"
        return f"{where}: rule '{rule}' broken (got '{name}')"
    problem = name_problem(name)
    if problem is not None:
        return f"{where}: {problem}"
    try:
        with (folder / "pyproject.toml").open("rb") as handle:
            pyproject = tomllib.load(handle)
    except FileNotFoundError:
        return f"{where}: no pyproject.toml"
    except OSError as exc:
        return f"{where}: cannot read pyproject.toml: {exc.strerror or exc}"
    except tomllib.TOMLDecodeError as exc:
        return f"{where}: pyproject.toml is not valid TOML: {exc}"
    project = pyproject.get("project")
    project = project if isinstance(project, dict) else {}
    dist = project.get("name")
    if not isinstance(dist, str) or canonical(dist) != canonical(DIST_PREFIX + name):
        rule = f"distribution name in pyproject.toml is {DIST_PREFIX}{name}"
        return f"{where}: rule '{rule}' broken (got '{_shown(dist)}')"
    if not (folder / "src" / name / "__init__.py").is_file():
        return f"{where}: rule 'import package is src/{name}/ (with __init__.py)' broken"
    scripts = project.get("scripts")
    script = scripts.get(name) if isinstance(scripts, dict) else None
    if script != CLI_ENTRY_POINT:
        rule = f'console script {name} = "{CLI_ENTRY_POINT}" in [project.scripts]'
        return f"{where}: rule '{rule}' broken (got '{_shown(script)}')"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rlm.skills.check DIR...``: one line per broken folder on stderr, exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m rlm.skills.check",
        description="Check skill folders against the naming rules of docs/skills.md.",
    )
    parser.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="a skill folder")
    args = parser.parse_args(argv)
    problems = [p for p in map(folder_problem, args.folders) if p is not None]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 2 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
