"""``rlm skill ...``: scaffold a skill package from the template, check a skill folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlm.errors import ConfigError

__all__ = ["main"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rlm skill",
        description="Work with skills: pip packages whose async run() is callable in every "
        "agent kernel and is also a command on $PATH (see docs/skills.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser(
        "new",
        help="scaffold a new skill package from the template",
        description="Create DIR/NAME/ (SKILL.md, pyproject.toml, src/NAME/) ready to edit; "
        "then install it by running install.sh of the rlm checkout with RLM_SKILLS_DIR=DIR.",
    )
    new.add_argument("name", help="the skill's name: its import name and its command name")
    new.add_argument(
        "--dir",
        default=Path("."),
        type=Path,
        help="folder to create the skill in (default: the current directory)",
    )
    check = commands.add_parser(
        "check",
        help="check skill folders against the naming rules (what install.sh enforces)",
        description="Check each DIR against the naming rules of docs/skills.md: folder, "
        "distribution rlm-skill-<name>, package src/<name>/, console script <name>. "
        "Exits 2 naming the first broken rule of each broken folder.",
    )
    check.add_argument("folders", nargs="+", type=Path, metavar="DIR", help="a skill folder")
    args = parser.parse_args(argv)
    if args.command == "check":
        return _check(args.folders)
    from rlm.skills.discovery import new_skill

    try:
        args.dir.mkdir(parents=True, exist_ok=True)
        folder = new_skill(args.name, args.dir)
    except ConfigError as exc:
        print(f"rlm skill: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"rlm skill: cannot create {args.dir}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(folder)
    # install.sh lives in the rlm checkout, not here: name the folder absolutely so the line
    # works when pasted there (it installs every skill folder under RLM_SKILLS_DIR)
    skills_dir = args.dir.resolve()
    print(
        f"edit {folder}/src/{args.name}/{args.name}.py, then install it from your rlm "
        f"checkout: RLM_SKILLS_DIR={skills_dir} ./install.sh",
        file=sys.stderr,
    )
    return 0


def _check(folders: list[Path]) -> int:
    from rlm.skills.check import folder_problem

    broken = 0
    for folder in folders:
        problem = folder_problem(folder)
        if problem is None:
            print(f"{folder}: ok")
        else:
            broken += 1
            print(f"rlm skill: {problem}", file=sys.stderr)
    return 2 if broken else 0
