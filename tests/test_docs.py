"""Keep the docs true to the code: settings table, CLI flags, test command, API, links.

The settings table in README.md and docs/configuration.md is generated from
``rlm.config.Settings``; print it with ``uv run python tests/test_docs.py`` and paste it into
both files when a setting changes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest

import rlm
from rlm.cli.main import build_parser
from rlm.config import Settings, env_name, flag_name, setting_descriptions

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]

#: Settings that are never CLI flags (mirrors ``rlm.cli.flags.NOT_FLAGS``).
NOT_FLAGS = {"api_key", "kernel_gateway_token"}

#: Settings also read from a second environment variable when theirs is unset.
FALLBACKS = {
    "api_key": "OPENAI_API_KEY",
    "model": "OPENAI_MODEL",
    "base_url": "OPENAI_BASE_URL",
    "compact_at_tokens": "RLM_SUMMARIZE_AT_TOKENS",
}

#: Defaults that depend on the platform, as the table states them; the code's default on
#: this machine must be one of the backticked values.
PLATFORM_DEFAULTS = {"kernel_start": "`fork` on Linux, else `cold`"}

HEADER = "| Environment variable | CLI flag | Default | Description |"


def _markdown(text: str) -> str:
    """A docstring as table-cell markdown: rST literals become backticks, no pipes."""
    return " ".join(text.replace("``", "`").split()).replace("|", "\\|")


def render_default(name: str, default: Any) -> str:
    if name in PLATFORM_DEFAULTS:
        return PLATFORM_DEFAULTS[name]
    if default is None or default == ():
        return "unset"
    if isinstance(default, tuple):
        default = ",".join(default)
    if isinstance(default, float):
        default = f"{default:g}"
    return f"`{default}`"


def settings_table() -> str:
    """The settings table, one row per ``Settings`` field, in declaration order."""
    rows = [HEADER, "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        env = f"`{env_name(name)}`"
        if name in FALLBACKS:
            env += f" (falls back to `{FALLBACKS[name]}`)"
        flag = "none (environment only)" if name in NOT_FLAGS else f"`{flag_name(name)}`"
        default = render_default(name, field.default)
        text = setting_descriptions().get(name, "")
        rows.append(f"| {env} | {flag} | {default} | {_markdown(text)} |")
    return "\n".join(rows)


def table_rows(path: Path) -> list[list[str]]:
    """The cells of the settings table in ``path`` (the table under ``HEADER``)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert HEADER in lines, f"{path.name}: no settings table (header {HEADER!r})"
    start = lines.index(HEADER) + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([cell.strip() for cell in cells])
    return rows


def table_text(path: Path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index(HEADER)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("path", [README, CONFIGURATION], ids=lambda p: p.name)
def test_settings_table_lists_every_setting_with_its_default(path: Path) -> None:
    rows = table_rows(path)
    documented = [re.sub(r"^`(RLM_[A-Z_]+)`.*", r"\1", row[0]) for row in rows]
    expected = [env_name(name) for name in Settings.model_fields]
    assert sorted(documented) == sorted(expected), (
        f"{path.name}: settings table out of date; missing {set(expected) - set(documented)}, "
        f"extra {set(documented) - set(expected)}"
    )
    by_env = {env: row for env, row in zip(documented, rows, strict=True)}
    for name, field in Settings.model_fields.items():
        row = by_env[env_name(name)]
        shown = row[2]
        if name in PLATFORM_DEFAULTS:
            code_default = f"`{field.default}`"
            assert code_default in shown, (
                f"{path.name}: {name} default {code_default} not in {shown!r}"
            )
        else:
            assert shown == render_default(name, field.default), (
                f"{path.name}: default of {env_name(name)} is {shown!r}, code says "
                f"{render_default(name, field.default)!r}"
            )
        flag = row[1]
        if name in NOT_FLAGS:
            assert "--" not in flag, f"{path.name}: {name} must not be documented as a flag"
        else:
            assert flag == f"`{flag_name(name)}`", f"{path.name}: flag of {name} is {flag!r}"


@pytest.mark.parametrize("path", [README, CONFIGURATION], ids=lambda p: p.name)
def test_settings_table_is_the_generated_one(path: Path) -> None:
    assert table_text(path) == settings_table(), (
        f"{path.name}: the settings table differs from Settings; regenerate it with "
        "`uv run python tests/test_docs.py` and paste it into README.md and "
        "docs/configuration.md"
    )


def test_every_cli_flag_is_documented() -> None:
    text = README.read_text(encoding="utf-8") + CONFIGURATION.read_text(encoding="utf-8")
    flags = [opt for action in build_parser()._actions for opt in action.option_strings]
    assert "--model" in flags and "--json" in flags
    missing = [
        flag for flag in flags if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)
    ]
    assert not missing, f"CLI flags missing from README.md and docs/configuration.md: {missing}"


def _commands(text: str) -> list[str]:
    """``uv run ... pytest ...`` command lines (a trailing ``|| ...`` is not part of it)."""
    found = []
    for line in text.splitlines():
        match = re.match(r"\s*(uv run\b[^|#]*\bpytest\b[^|#]*?)\s*(\|\|.*)?(#.*)?$", line)
        if match:
            found.append(match.group(1).strip())
    return found


def test_readme_test_command_is_the_ci_one() -> None:
    ci = _commands((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    readme = _commands(README.read_text(encoding="utf-8"))
    assert ci == ["uv run --group dev pytest -q"], ci
    assert readme == ci, f"README test command {readme} differs from .ci/run {ci}"


def test_every_public_name_is_documented() -> None:
    text = "\n".join(path.read_text(encoding="utf-8") for path in DOCS)
    missing = [
        name for name in rlm.__all__ if not re.search(rf"(?<![\w]){re.escape(name)}(?!\w)", text)
    ]
    assert not missing, f"rlm.__all__ names not mentioned in README.md or docs/: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    anchors: set[str] = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (match := re.match(r"#{1,6}\s+(.*)", line)):
            anchors.add(_slug(match.group(1)))
    return anchors


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\[[^\]]*\]\(([^)\s]+)\)", text)


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in _links(path):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(target)
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(target)
    assert not broken, f"{path.name}: broken links {broken}"


if __name__ == "__main__":  # print the table to paste into the docs
    sys.stdout.write(settings_table() + "\n")
