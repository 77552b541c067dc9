"""Skill discovery, kernel bootstrap, prompt listing and scaffolding.

Skills are ordinary distributions named ``rlm-skill-<name>`` installed next to rlm (see
``install.sh`` and ``docs/skills.md``). The orchestrator must not import them: imports are slow
and may have side effects, and the kernel is where they are used. So the work is split:

* :func:`discover` reads installed metadata and each skill's ``SKILL.md`` without importing;
* :func:`kernel_bootstrap_source` is code run *inside* the kernel that imports the skills,
  binds them under their names and leaves a JSON report holding the real ``run`` signatures
  and any import failures; the bootstrap's execute request carries :data:`REPORT_EXPRESSIONS`
  to read it back in the execute reply, beside (not in) the cell's output, which the user's
  output cap may cut (:func:`parse_bootstrap_report` decodes it);
* :func:`prompt_section` turns both into the system-prompt text.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.resources
import importlib.util
import json
import keyword
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from importlib.machinery import PathFinder
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ConfigDict

from rlm.errors import ConfigError, KernelError
from rlm.skills.check import DIST_PREFIX, canonical, name_problem

if TYPE_CHECKING:
    import yaml

__all__ = [
    "DIST_PREFIX",
    "REPORT_EXPRESSIONS",
    "REPORT_VARIABLE",
    "BootstrapReport",
    "SkillInfo",
    "discover",
    "kernel_bootstrap_source",
    "new_skill",
    "parse_bootstrap_report",
    "parse_front_matter",
    "prompt_section",
    "template_dir",
    "validate_skill_name",
]

#: Kernel variable in which the bootstrap leaves its JSON report for :data:`REPORT_EXPRESSIONS`.
REPORT_VARIABLE = "__rlm_skills_report"

#: ``user_expressions`` of the bootstrap's execute request: takes the report out of the
#: namespace (so the model never sees it) and returns it in the execute reply.
REPORT_EXPRESSIONS = {"rlm_skills": f"globals().pop({REPORT_VARIABLE!r}, None)"}

#: Placeholder for the skill name in template paths and file contents.
PLACEHOLDER = "{{name}}"

#: Template files that configure rlm's own repo (ruff) and must not reach a new skill.
_TEMPLATE_SKIP = frozenset({"ruff.toml", "__pycache__", ".ruff_cache"})

log = logging.getLogger(__name__)


class SkillInfo(BaseModel):
    """One installed skill as seen from its metadata (nothing imported)."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Import name, console-script name and kernel variable name (``websearch``)."""
    distribution: str
    """Distribution name as declared (``rlm-skill-websearch``)."""
    version: str = ""
    """Installed version of the distribution."""
    description: str = ""
    """``description`` from SKILL.md front matter, else the distribution summary."""
    skill_md: Path | None = None
    """Installed SKILL.md with the usage notes, or None if the skill ships none."""
    signature: str | None = None
    """``run`` signature; only known after the kernel imported the skill (see bootstrap)."""


def parse_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split the ``---``-fenced YAML front matter from a Markdown body.

    Read with PyYAML's ``BaseLoader``, which resolves no implicit types: every scalar stays
    the text written (``no``, ``1.10`` or a date is not turned into a bool, float or date;
    a description is prose). Surrounding whitespace of top-level strings is dropped (a ``>``
    block's final newline included). Returns ``({}, text)`` when there is no front matter.
    Raises :class:`ConfigError` (one line) when the front matter is not YAML ``key: value``
    lines, so a skill author learns which line to fix.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}, text
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        return {}, text
    body = "\n".join(lines[end + 1 :]).lstrip("\n")
    import yaml  # only for a skill's front matter: a run without skills never needs it

    try:
        meta = yaml.load("\n".join(lines[1:end]), Loader=yaml.BaseLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"front matter is not valid YAML: {_yaml_problem(exc)}") from None
    if meta is None:
        return {}, body
    if not isinstance(meta, dict):
        raise ConfigError("front matter must be 'key: value' lines")
    return {
        key: value.strip() if isinstance(value, str) else value for key, value in meta.items()
    }, body


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line N: problem`` counted in the whole file (the front matter starts on line 2)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if "mapping values are not allowed" in problem:
        problem += " (quote a value that contains ': ')"
    return f"line {mark.line + 2}: {problem}" if mark is not None else problem


def _direct_url_dir(dist: importlib.metadata.Distribution) -> Path | None:
    """Source folder of a distribution installed from a local directory (PEP 610)."""
    try:
        raw = dist.read_text("direct_url.json")
        info = json.loads(raw) if raw else {}
    except (OSError, ValueError):
        return None
    url = info.get("url", "")
    if "dir_info" not in info or not url.startswith("file:"):
        return None
    from urllib.request import url2pathname  # http.client and email: not at every start

    return Path(url2pathname(unquote(urlparse(url).path)))


def _find_skill_md(
    dist: importlib.metadata.Distribution, name: str, path: list[str] | None
) -> Path | None:
    """Locate SKILL.md: in the installed package, else in the source dir (editable installs)."""
    for file in dist.files or ():
        if file.as_posix() == f"{name}/SKILL.md":
            located = Path(str(dist.locate_file(file)))
            if located.is_file():
                return located.resolve()
    try:  # PathFinder only searches the path; unlike import, it runs no package code
        spec = PathFinder.find_spec(name, path)
    except (ImportError, ValueError, OSError):
        spec = None
    for location in (spec.submodule_search_locations or ()) if spec else ():
        candidate = Path(location) / "SKILL.md"
        if candidate.is_file():
            return candidate.resolve()
    source = _direct_url_dir(dist)
    if source is not None and (source / "SKILL.md").is_file():
        return (source / "SKILL.md").resolve()
    return None


def _may_be_skill(dist: importlib.metadata.Distribution) -> bool:
    """False for a distribution whose metadata folder (``NAME-VERSION.dist-info``, ``.egg-info``)
    is named for something else than a skill: reading every distribution's metadata (an email
    parse each) took ~80 ms of every run's start. True where the folder is unknown."""
    folder = getattr(dist, "_path", None)
    if not isinstance(folder, Path):
        return True
    return canonical(folder.name).startswith(DIST_PREFIX)


def discover(path: list[str] | None = None) -> list[SkillInfo]:
    """Installed skills (distributions named ``rlm-skill-*``), sorted by name; imports nothing.

    ``path`` searches other ``sys.path``-like folders (e.g. another environment's
    site-packages) instead of the running interpreter's. When one name is installed twice,
    the first on the path wins, as it would for ``import``.
    """
    found: dict[str, SkillInfo] = {}
    dists = (
        importlib.metadata.distributions()
        if path is None
        else importlib.metadata.distributions(path=path)
    )
    for dist in dists:
        if not _may_be_skill(dist):
            continue
        declared = dist.metadata["Name"] or ""
        normalized = canonical(declared)
        if not normalized.startswith(DIST_PREFIX) or normalized in found:
            continue
        name = normalized.removeprefix(DIST_PREFIX).replace("-", "_")
        if not name.isidentifier():
            continue
        skill_md = _find_skill_md(dist, name, path)
        meta: dict[str, Any] = {}
        if skill_md is not None:
            try:
                meta, _ = parse_front_matter(skill_md.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                meta = {}
            except ConfigError as exc:  # one skill's typo must not stop every run
                log.warning("rlm: skill %s: %s: %s", name, skill_md, exc)
        description = meta.get("description")
        found[normalized] = SkillInfo(
            name=name,
            distribution=declared,
            version=dist.version or "",
            description=(description if isinstance(description, str) else "")
            or dist.metadata["Summary"]
            or "",
            skill_md=skill_md,
        )
    return sorted(found.values(), key=lambda info: info.name)


_BOOTSTRAP = """\
def __rlm_load_skills(names):
    import json
    try:
        from rlm.skills.entry import load_skills
        report = load_skills(names, globals())
    except Exception as exc:
        error = f"{{type(exc).__name__}}: {{exc}}"
        report = {{"loaded": {{}}, "failed": {{name: error for name in names}}}}
    return json.dumps(report)
{variable} = __rlm_load_skills({names!r})
del __rlm_load_skills
"""


class BootstrapReport(BaseModel):
    """What the kernel bootstrap found: the skills that loaded and those that did not."""

    model_config = ConfigDict(frozen=True)

    loaded: dict[str, str] = {}
    """Skill name to its ``run`` signature (``async run(text: str) -> str``)."""
    failed: dict[str, str] = {}
    """Skill name to why its import failed (``ImportError: ...``)."""


def kernel_bootstrap_source(names: Sequence[str]) -> str:
    """Python source that imports ``names`` into the executing namespace and reports.

    Meant to run once as the kernel's first cell. Each skill is bound under its own name and
    made callable (``await name(...)``); one failing import never stops the others. The
    report, ``{"loaded": {name: signature}, "failed": {name: error}}`` as JSON, is left in
    :data:`REPORT_VARIABLE`, not printed: run the cell with :data:`REPORT_EXPRESSIONS` as its
    ``user_expressions`` and decode the reply's with :func:`parse_bootstrap_report`. The helper
    function deletes itself and the expression removes the report, so the user namespace only
    gains the skills; the cell ends in a statement so IPython shows no ``Out[]``.
    """
    bad = [name for name in names if not name.isidentifier() or keyword.iskeyword(name)]
    if bad:
        raise ValueError(f"not valid skill names: {', '.join(map(repr, bad))}")
    return _BOOTSTRAP.format(variable=REPORT_VARIABLE, names=list(names))


def parse_bootstrap_report(evaluated: Mapping[str, Any]) -> BootstrapReport:
    """The report of :func:`kernel_bootstrap_source`, from the bootstrap's execute reply.

    ``evaluated`` is the reply's ``user_expressions`` (``{key: {"status", "data", ...}}``) for
    :data:`REPORT_EXPRESSIONS`; the value is the report's JSON text as its ``repr``. Raises
    :class:`KernelError` when there is no readable report (the bootstrap did not run to its end
    or the kernel did not evaluate the expression). A kernel without ``rlm`` still reports,
    with every skill failed.
    """
    (key,) = REPORT_EXPRESSIONS
    result = evaluated.get(key)
    if not isinstance(result, Mapping):
        raise KernelError("skill bootstrap gave no report (the kernel evaluated no expression)")
    if result.get("status") != "ok":
        reason = f"{result.get('ename', 'error')}: {result.get('evalue', '')}"
        raise KernelError(f"skill bootstrap report could not be read: {reason}")
    shown = (result.get("data") or {}).get("text/plain", "None")
    try:
        text = ast.literal_eval(shown)
        if text is None:
            raise KernelError("skill bootstrap left no report (it did not run to its end)")
        if not isinstance(text, str):
            raise TypeError(f"expected the report's JSON text, got {type(text).__name__}")
        return BootstrapReport.model_validate_json(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        # ValidationError is a ValueError; its first line says what was wrong.
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KernelError(f"skill bootstrap report is malformed: {first}") from None


def prompt_section(skills: Iterable[SkillInfo], signatures: dict[str, str]) -> str:
    """System-prompt text listing the skills the kernel actually loaded; ``""`` if none.

    ``signatures`` is the bootstrap report's ``loaded`` mapping (falling back to
    ``SkillInfo.signature`` if the caller filled it in): skills with neither failed to import
    and are left out, so the model is never told about a skill it cannot call.
    Each entry gives the call form, the one-line description and where SKILL.md lives, so
    the model can read the details only when it needs them.
    """
    entries = []
    for skill in skills:
        signature = signatures.get(skill.name) or skill.signature
        if not signature:
            continue
        is_async = signature.startswith("async ")
        call = signature.removeprefix("async ").removeprefix("run")
        entry = f"- `{'await ' if is_async else ''}{skill.name}{call}`"
        if skill.description:
            entry += f": {skill.description}"
        if skill.skill_md is not None:
            entry += f" (details: {skill.skill_md})"
        entries.append(entry)
    if not entries:
        return ""
    return (
        "## Skills\n"
        "These skills are already imported in your ipython kernel under their own names. "
        "Call one directly, e.g. `await name(...)` (same as `await name.run(...)`); "
        "`help(name)` shows its full docstring. Each is also a shell command with the same "
        "name (`name --help`, list parameters as `--queries a b`).\n" + "\n".join(entries) + "\n"
    )


def validate_skill_name(name: str) -> None:
    """Raise :class:`ConfigError` (one line) unless ``name`` can be a new skill's name.

    The name is at once a directory, an import name, a console script and a kernel variable,
    so it must follow the naming rules (:func:`rlm.skills.check.name_problem`: a plain
    lowercase identifier that is no keyword, builtin, standard-library module or IPython
    name) and, for a new skill, must not be a module already importable here (``pytest``).
    """
    problem = name_problem(name)
    if problem is not None:
        raise ConfigError(problem)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is not None:
        where = spec.origin or ", ".join(spec.submodule_search_locations or ()) or "?"
        raise ConfigError(f"invalid skill name {name!r}: module already importable from {where}")


def template_dir() -> Path:
    """The skill template: shipped in the wheel as ``rlm/skills_template``, else the repo's.

    The repo fallback serves source checkouts and editable installs, where the wheel's
    force-include has not happened.
    """
    packaged = importlib.resources.files("rlm") / "skills_template"
    if packaged.is_dir():
        return Path(str(packaged))
    repo = Path(__file__).resolve().parents[3] / "skills-template"
    if repo.is_dir():
        return repo
    raise ConfigError("skill template not found (neither rlm/skills_template nor skills-template)")


def new_skill(name: str, dest_dir: Path) -> Path:
    """Scaffold ``dest_dir/<name>/`` from the template and return that folder.

    Fills ``{{name}}`` in paths and file contents, so the result already follows the naming
    rules ``install.sh`` enforces. Raises :class:`ConfigError` for a bad name or an existing
    target (never overwrites work).
    """
    validate_skill_name(name)
    target = Path(dest_dir) / name
    if target.exists():
        raise ConfigError(f"cannot create skill {name!r}: {target} already exists")
    source = template_dir()
    files = sorted(
        path
        for path in source.rglob("*")
        if path.is_file()
        and not _TEMPLATE_SKIP.intersection(path.relative_to(source).parts)
        and path.suffix != ".pyc"
    )
    try:
        for path in files:
            relative = Path(
                *(part.replace(PLACEHOLDER, name) for part in path.relative_to(source).parts)
            )
            out = target / relative
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                shutil.copyfile(path, out)
            else:
                out.write_text(text.replace(PLACEHOLDER, name), encoding="utf-8")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # no half-made skill left behind
        raise
    return target
