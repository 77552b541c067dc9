#!/usr/bin/env bash
# Install rlm plus every skill found in $RLM_SKILLS_DIR (default /task/rlm-skills) into ONE
# uv tool environment, so the kernel (which runs in rlm's own Python) can import the skills
# and their console scripts land next to `rlm` on PATH.
#
# Safe to re-run: rlm and the skills are rebuilt from their folders every time (new code is
# picked up), skills added since the last run are added and removed ones are dropped.
#
# Environment:
#   RLM_SKILLS_DIR   folder of skill packages, one subfolder per skill (default /task/rlm-skills)
#   UV_TOOL_DIR      where uv keeps tool environments (uv's own variable)
#   UV_TOOL_BIN_DIR  where executables are linked (uv's own variable; default ~/.local/bin)
#   UV_PYTHON        Python used for the tool environment (uv's own variable)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SKILLS_DIR="${RLM_SKILLS_DIR:-/task/rlm-skills}"

log() { printf 'install.sh: %s\n' "$*"; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}

# --- uv ---------------------------------------------------------------------------------------
UV=(uv)
ensure_uv() {
    command -v uv >/dev/null 2>&1 && return
    command -v python3 >/dev/null 2>&1 || die "neither uv nor python3 found; install uv first"
    log "uv not found; installing it with pip"
    # --user first; PEP 668 systems need --break-system-packages; inside a venv --user is refused.
    python3 -m pip install --quiet --user uv ||
        python3 -m pip install --quiet --user --break-system-packages uv ||
        python3 -m pip install --quiet uv ||
        die "could not install uv with pip; see https://docs.astral.sh/uv/"
    PATH="$(python3 -m site --user-base)/bin:$PATH"
    export PATH
    if command -v uv >/dev/null 2>&1; then
        UV=(uv)
    elif python3 -m uv --version >/dev/null 2>&1; then
        UV=(python3 -m uv)
    else
        die "uv was installed by pip but cannot be found on PATH"
    fi
}

# --- skill naming rules ------------------------------------------------------------------------
# toml_get FILE TABLE KEY: print the string value of KEY in [TABLE] (bare or quoted key).
# A deliberately small reader for the flat tables the rules need; it needs no Python.
toml_get() {
    awk -v want_table="$2" -v want_key="$3" '
        function unquote(s) {
            if (s ~ /^".*"$/ || s ~ /^\047.*\047$/) return substr(s, 2, length(s) - 2)
            return s
        }
        /^[[:space:]]*\[/ {
            t = $0
            sub(/^[[:space:]]*\[+[[:space:]]*/, "", t)
            sub(/[[:space:]]*\]+[[:space:]]*(#.*)?$/, "", t)
            gsub(/[[:space:]]*\.[[:space:]]*/, ".", t)
            gsub(/"/, "", t)
            table = t
            next
        }
        table == want_table && match($0, /^[[:space:]]*("[^"]*"|\047[^\047]*\047|[A-Za-z0-9_.-]+)[[:space:]]*=/) {
            k = substr($0, RSTART, RLENGTH)
            v = substr($0, RSTART + RLENGTH)
            sub(/=$/, "", k)
            gsub(/^[[:space:]]+|[[:space:]]+$/, "", k)
            k = unquote(k)
            sub(/^[[:space:]]+/, "", v)
            sub(/[[:space:]]*(#[^"\047]*)?$/, "", v)
            if (k == want_key) { print unquote(v); exit }
        }
    ' "$1"
}

# canonical NAME: PEP 503 normalized distribution name (rlm_skill.Foo -> rlm-skill-foo).
canonical() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | sed -E 's/[-_.]+/-/g'; }

# check_skill DIR: enforce the four naming rules of docs/skills.md; die naming the broken one.
check_skill() {
    local dir="$1" name pyproject dist script
    name="$(basename "$dir")"
    pyproject="$dir/pyproject.toml"
    [[ "$name" =~ ^[a-z][a-z0-9_]*$ ]] ||
        die "skill folder $dir: rule 'folder name <name> is a lowercase Python identifier' broken (got '$name')"
    dist="$(toml_get "$pyproject" project name)"
    [[ "$(canonical "$dist")" == "$(canonical "rlm-skill-$name")" ]] ||
        die "skill folder $dir: rule 'distribution name in pyproject.toml is rlm-skill-$name' broken (got '${dist:-<missing>}')"
    [[ -f "$dir/src/$name/__init__.py" ]] ||
        die "skill folder $dir: rule 'import package is src/$name/ (with __init__.py)' broken"
    script="$(toml_get "$pyproject" project.scripts "$name")"
    [[ "$script" == "rlm.skill:cli" ]] ||
        die "skill folder $dir: rule 'console script $name = \"rlm.skill:cli\" in [project.scripts]' broken (got '${script:-<missing>}')"
}

# --- main ----------------------------------------------------------------------------------------
ensure_uv

skills=()
skill_dirs=()
if [[ -d "$SKILLS_DIR" ]]; then
    for dir in "$SKILLS_DIR"/*/; do
        [[ -d "$dir" ]] || continue
        dir="${dir%/}"
        if [[ ! -f "$dir/pyproject.toml" ]]; then
            log "skipping $dir (no pyproject.toml)"
            continue
        fi
        check_skill "$dir"
        skills+=("$(basename "$dir")")
        skill_dirs+=("$(cd "$dir" && pwd)")
    done
else
    log "no skills folder at $SKILLS_DIR; installing rlm alone"
fi

# --force: replace executables uv does not own yet (e.g. an older pip install); it also
#   recreates the tool environment, so nothing from a removed skill survives a re-run.
# --reinstall-package: rebuild rlm and the skills from their folders on every run; uv would
#   otherwise reuse a cached build of an unchanged pyproject.toml and miss new code.
# --with-executables-from: plain --with would install a skill without linking its console
#   script; this installs it AND links its executables next to rlm.
# --compile-bytecode: write the .pyc files now; without them every `rlm` start and every kernel
#   compiles its imports from source (about twice the start-up) wherever
#   PYTHONDONTWRITEBYTECODE is set or the tool directory is read-only.
args=(tool install --force --compile-bytecode --reinstall-package rlm)
for i in "${!skills[@]}"; do
    # --with-executables-from wants a named requirement: "rlm-skill-<name> @ file:///dir".
    url="file://${skill_dirs[$i]// /%20}"
    args+=(--with-executables-from "rlm-skill-${skills[$i]} @ $url")
    args+=(--reinstall-package "rlm-skill-${skills[$i]}")
done
args+=("$ROOT")

log "installing rlm from $ROOT${skills[*]:+ with skills: ${skills[*]}}"
"${UV[@]}" "${args[@]}"

bin_dir="$("${UV[@]}" tool dir --bin)"
[[ -x "$bin_dir/rlm" ]] || die "rlm was installed but $bin_dir/rlm is missing"
log "rlm -> $bin_dir/rlm"
for name in "${skills[@]}"; do
    [[ -x "$bin_dir/$name" ]] || die "skill $name was installed but $bin_dir/$name is missing"
    log "$name -> $bin_dir/$name"
done
case ":$PATH:" in
*":$bin_dir:"*) ;;
*) log "note: $bin_dir is not on PATH; add it: export PATH=\"$bin_dir:\$PATH\"" ;;
esac
