#!/usr/bin/env bash
# Install rlm plus every skill found in $RLM_SKILLS_DIR (default /task/rlm-skills) into ONE
# uv tool environment, so the kernel (which runs in rlm's own Python) can import the skills
# and their console scripts land next to `rlm` on PATH.
#
# Safe to re-run: rlm and the skills are rebuilt from their folders every time (new code is
# picked up), skills added since the last run are added and removed ones are dropped.
#
# Usage: ./install.sh [--with PKG[,PKG...]]...
#
# --with numpy,pandas  also install these packages into the environment, which is the one the
#                      agent's kernel runs in (any requirement uv takes: names, versions, paths
#                      to wheels). `%pip install X` in a cell works too, but a re-run of this
#                      script rebuilds the environment and drops what was pip-installed: list
#                      what should stay here or in RLM_KERNEL_PACKAGES.
#
# Environment:
#   RLM_KERNEL_PACKAGES  comma-separated packages installed as with --with (put it in your
#                        shell profile so every re-run keeps them)
#   RLM_SKILLS_DIR   folder of skill packages, one subfolder per skill (default /task/rlm-skills)
#   UV_TOOL_DIR      where uv keeps tool environments (uv's own variable)
#   UV_TOOL_BIN_DIR  where executables are linked (uv's own variable; default ~/.local/bin)
#   UV_PYTHON        Python used for the tool environment (uv's own variable)
#
# PATH: a script cannot change the PATH of the shell that runs it. When uv's bin directory is
# not on the caller's PATH, rlm (and every skill) is also linked into the first writable one of
# /usr/local/bin, ~/bin, ~/.local/bin that IS on it, so `rlm` works in the same shell right
# away; when there is none, or UV_TOOL_BIN_DIR was chosen explicitly (then PATH is yours to
# manage), the last line says exactly what to run.
set -euo pipefail

# The caller's PATH, before ensure_uv adds pip's user bin directory to ours.
CALLER_PATH="$PATH"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SKILLS_DIR="${RLM_SKILLS_DIR:-/task/rlm-skills}"

log() { printf 'install.sh: %s\n' "$*"; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 1
}
usage_error() {
    printf 'install.sh: error: %s (usage: ./install.sh [--with PKG[,PKG...]])\n' "$*" >&2
    exit 2
}

# --- arguments ------------------------------------------------------------------------------------
kernel_packages=()
# add_packages "a, b,c": append each non-empty comma-separated item to kernel_packages.
add_packages() {
    local item
    local -a items
    IFS=',' read -r -a items <<<"$1"
    for item in "${items[@]}"; do
        item="${item#"${item%%[![:space:]]*}"}"
        item="${item%"${item##*[![:space:]]}"}"
        [[ -z "$item" ]] || kernel_packages+=("$item")
    done
}
add_packages "${RLM_KERNEL_PACKAGES:-}"
while (($#)); do
    case "$1" in
    --with)
        (($# >= 2)) && [[ -n "$2" ]] || usage_error "--with needs a comma-separated list of packages"
        add_packages "$2"
        shift 2
        ;;
    --with=*)
        [[ -n "${1#--with=}" ]] || usage_error "--with needs a comma-separated list of packages"
        add_packages "${1#--with=}"
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
        exit 0
        ;;
    *) usage_error "unknown argument: $1" ;;
    esac
done

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
# check_skills DIR...: the naming rules of docs/skills.md, checked by rlm's own code
# (rlm.skills.check, standard library only) from this checkout before anything is installed,
# in any Python 3.11+ uv finds; prints one line per broken folder and fails.
check_skills() {
    PYTHONPATH="$ROOT/src" "${UV[@]}" run --no-project --no-config --quiet --python '>=3.11' \
        python -m rlm.skills.check "$@"
}

# --- main ----------------------------------------------------------------------------------------
ensure_uv

found=()
if [[ -d "$SKILLS_DIR" ]]; then
    for dir in "$SKILLS_DIR"/*/; do
        [[ -d "$dir" ]] || continue
        dir="${dir%/}"
        if [[ ! -f "$dir/pyproject.toml" ]]; then
            log "skipping $dir (no pyproject.toml)"
            continue
        fi
        found+=("$dir")
    done
else
    log "no skills folder at $SKILLS_DIR; installing rlm alone"
fi

skills=()
skill_dirs=()
if ((${#found[@]})); then
    if ! problems="$(check_skills "${found[@]}" 2>&1)"; then
        while IFS= read -r line; do
            [[ -z "$line" ]] || printf 'install.sh: error: %s\n' "$line" >&2
        done <<<"$problems"
        exit 1
    fi
    for dir in "${found[@]}"; do
        skills+=("$(basename "$dir")")
        skill_dirs+=("$(cd "$dir" && pwd)")
    done
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
for package in "${kernel_packages[@]}"; do
    args+=(--with "$package")
done
args+=("$ROOT")

log "installing rlm from $ROOT${skills[*]:+ with skills: ${skills[*]}}"
((${#kernel_packages[@]} == 0)) || log "with packages for the kernel: ${kernel_packages[*]}"
"${UV[@]}" "${args[@]}"

bin_dir="$("${UV[@]}" tool dir --bin)"
[[ -x "$bin_dir/rlm" ]] || die "rlm was installed but $bin_dir/rlm is missing"
log "rlm -> $bin_dir/rlm"
for name in "${skills[@]}"; do
    [[ -x "$bin_dir/$name" ]] || die "skill $name was installed but $bin_dir/$name is missing"
    log "$name -> $bin_dir/$name"
done
# --- PATH -----------------------------------------------------------------------------------------
on_caller_path() {
    case ":$CALLER_PATH:" in *":$1:"*) return 0 ;; esac
    return 1
}

# link_into DIR: symlink rlm and the skills' executables into DIR; never replaces a file that
# is not already a symlink (it belongs to something else).
link_into() {
    local dir="$1" name
    for name in rlm "${skills[@]}"; do
        if [[ -e "$dir/$name" && ! -L "$dir/$name" ]]; then
            log "not linking $name into $dir: $dir/$name exists and is not a link"
            return 1
        fi
    done
    for name in rlm "${skills[@]}"; do
        ln -sfn "$bin_dir/$name" "$dir/$name" || return 1
        log "$name -> $dir/$name (a link; $dir is on your PATH)"
    done
}

if ! on_caller_path "$bin_dir"; then
    linked=""
    candidates=(/usr/local/bin "$HOME/bin" "$HOME/.local/bin")
    [[ -z "${UV_TOOL_BIN_DIR:-}" ]] || candidates=()
    for dir in "${candidates[@]}"; do
        [[ "$dir" != "$bin_dir" && -d "$dir" && -w "$dir" ]] && on_caller_path "$dir" || continue
        if link_into "$dir"; then
            linked="$dir"
            break
        fi
    done
    if [[ -z "$linked" ]]; then
        log "note: $bin_dir is not on your PATH, so \`rlm\` is not found yet. Run this in your shell" \
            "(and add it to ~/.bashrc or ~/.profile to keep it):"
        printf '    export PATH="%s:$PATH"\n' "$bin_dir"
    fi
fi
