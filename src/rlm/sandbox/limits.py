"""Per-kernel resource limits: ``RLM_KERNEL_MEMORY`` (e.g. ``4G``) and ``RLM_KERNEL_PROCESSES``
(e.g. ``256``), so that an allocation or fork bomb in one cell costs that kernel, never the
orchestrator (which owns every agent, log and budget) or the other kernels.

A kernel applies its limits itself, still single-threaded and before any model-written code
runs: right after the fork in :mod:`rlm.zygote.child`, and in :mod:`rlm.sandbox.launch` for a
cold start. Two mechanisms, the strongest that is available:

* **a cgroup of its own** (``rlm-kernel-<pid>``, beside the orchestrator's processes in the
  orchestrator's own cgroup) where cgroupfs is writable: cgroup v2 ``memory.max`` +
  ``pids.max`` when those controllers are enabled for children there (a delegated subtree, or
  the root cgroup of a container), else the cgroup v1 ``memory`` and ``pids`` hierarchies. The
  cgroup counts the kernel and everything it starts together; past ``memory.max`` the OOM
  killer picks one of *them* (the model is told "memory limit 4G reached" when it was the
  kernel), past ``pids.max`` ``fork`` fails with EAGAIN.
* **setrlimit** always for memory: ``RLIMIT_DATA`` (private writable memory: heap, anonymous
  mappings; not shared libraries or reserved-but-unwritable address space, so thread stacks
  and malloc arenas do not make a 4G kernel fail early as ``RLIMIT_AS`` would). A 20 GiB
  allocation in a cell is then a ``MemoryError`` in that cell, with the kernel and its
  variables intact. Without a cgroup, processes are capped by ``RLIMIT_NPROC``, which Linux
  counts *per uid*: the kernel gets the uid's task count at its start plus the limit. Linux
  ignores ``RLIMIT_NPROC`` for root, so as root without a writable cgroup the process limit is
  not enforced (rlm says so at start).

Defaults: no limit (a kernel is a normal process, as before). Left-over cgroups of kernels
that are gone are removed when the next kernel starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import resource
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rlm.errors import ConfigError

__all__ = [
    "LIMIT_VARS",
    "Limits",
    "apply_from_env",
    "cgroup_parents",
    "death_cause",
    "format_size",
    "limits_env",
    "resolve_limits",
    "sweep",
]

log = logging.getLogger("rlm.sandbox")

LIMIT_VARS = ("RLM_KERNEL_MEMORY", "RLM_KERNEL_PROCESSES")
#: Below this an ipykernel cannot even start (it maps ~100 MiB of heap and modules).
MIN_MEMORY = 256 * 1024 * 1024
#: Tasks (processes and threads: both Linux limits count threads) a bare ipykernel needs.
MIN_PROCESSES = 16
_PREFIX = "rlm-kernel-"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?$", re.IGNORECASE)
_OFF = ("", "0", "off", "none", "unlimited")
_warned = False


@dataclass(frozen=True)
class Limits:
    """The limits of one kernel (None: unlimited); ``memory`` in bytes."""

    memory: int | None = None
    processes: int | None = None


def parse_memory(text: str) -> int | None:
    """``4G``, ``512M``, ``1.5GiB``, a byte count; ``off``/``0``/empty: None (unlimited)."""
    value = text.strip()
    if value.lower() in _OFF:
        return None
    match = _SIZE.match(value)
    if match is None:
        raise ConfigError(
            f"RLM_KERNEL_MEMORY: expected a size such as 4G or 512M, or 'off' (got {text!r})"
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    if size < MIN_MEMORY:
        raise ConfigError(f"RLM_KERNEL_MEMORY: at least 256M, a kernel needs that (got {text!r})")
    return size


def parse_processes(text: str) -> int | None:
    """A task count (processes and threads); ``off``/``0``/empty: None (unlimited)."""
    value = text.strip()
    if value.lower() in _OFF:
        return None
    if not value.isdigit():
        raise ConfigError(
            f"RLM_KERNEL_PROCESSES: expected a number such as 256, or 'off' (got {text!r})"
        )
    if int(value) < MIN_PROCESSES:
        raise ConfigError(
            f"RLM_KERNEL_PROCESSES: at least {MIN_PROCESSES}, a kernel needs that (got {text!r})"
        )
    return int(value)


def format_size(size: int) -> str:
    """``4294967296`` -> ``4G``: how the model and the user are told the limit."""
    for unit in ("T", "G", "M", "K"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return f"{size / _UNITS['M']:.0f}M" if size >= _UNITS["M"] else str(size)


def _read(env: Mapping[str, str]) -> Limits:
    return Limits(
        parse_memory(env.get("RLM_KERNEL_MEMORY", "")),
        parse_processes(env.get("RLM_KERNEL_PROCESSES", "")),
    )


def resolve_limits(environ: Mapping[str, str] | None = None) -> Limits:
    """The limits of this run's kernels, checked (one-line ConfigError on a bad value); warns
    once when the process limit cannot be enforced here (root without a writable cgroup)."""
    limits = _read(os.environ if environ is None else environ)
    if limits.memory is None and limits.processes is None:
        return limits
    parents = cgroup_parents()
    global _warned
    if limits.processes is not None and "pids" not in parents and os.geteuid() == 0:
        if _warned:
            return limits
        _warned = True
        log.warning("rlm: RLM_KERNEL_PROCESSES is not enforced: Linux ignores RLIMIT_NPROC for "
                    "root and no writable cgroup with the pids controller was found")  # fmt: skip
    how = ", ".join(sorted(parents)) or "none"
    log.info("rlm: kernel limits %s (cgroup controllers: %s)", limits, how)
    return limits


def limits_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The limit variables every kernel gets (normalised; none when unlimited)."""
    limits = _read(os.environ if environ is None else environ)
    env = {}
    if limits.memory is not None:
        env["RLM_KERNEL_MEMORY"] = str(limits.memory)
    if limits.processes is not None:
        env["RLM_KERNEL_PROCESSES"] = str(limits.processes)
    return env


def _own_cgroups() -> dict[str, str]:
    """Hierarchy -> this process's cgroup path: ``"v2"`` for the unified one, else the v1
    controller names (``memory``, ``pids``)."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            number, controllers, path = line.split(":", 2)
            if number == "0" and controllers == "":
                found["v2"] = path
            for name in controllers.split(","):
                if name in ("memory", "pids"):
                    found[name] = path
    return found


def _mounts() -> dict[str, Path]:
    """``"v2"`` and v1 controller name -> where that hierarchy is mounted."""
    mounts: dict[str, Path] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            left, _, right = line.partition(" - ")
            fields, extra = left.split(), right.split()
            if len(fields) < 5 or len(extra) < 3:
                continue
            point = Path(fields[4].replace("\\040", " "))
            if extra[0] == "cgroup2":
                mounts.setdefault("v2", point)
            elif extra[0] == "cgroup":
                for name in extra[2].split(","):
                    if name in ("memory", "pids"):
                        mounts.setdefault(name, point)
    return mounts


def cgroup_parents() -> dict[str, Path]:
    """Controller (``memory``, ``pids``) -> the writable directory a kernel's own cgroup is
    made in: this process's cgroup in the hierarchy that offers the controller."""
    own, mounts = _own_cgroups(), _mounts()
    parents: dict[str, Path] = {}
    if "v2" in own and "v2" in mounts:
        base = mounts["v2"] / own["v2"].lstrip("/")
        try:
            enabled = (base / "cgroup.subtree_control").read_text().split()
        except OSError:
            enabled = []
        for name in ("memory", "pids"):
            if name in enabled and os.access(base, os.W_OK):
                parents[name] = base
    for name in ("memory", "pids"):
        if name not in parents and name in own and name in mounts:
            base = mounts[name] / own[name].lstrip("/")
            if os.access(base, os.W_OK):
                parents[name] = base
    return parents


def _sweep(parent: Path) -> None:
    """Remove the empty cgroups of kernels that are gone (rmdir refuses a populated one)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            if entry.name.startswith(_PREFIX) and entry.name[len(_PREFIX) :].isdigit():
                pid = int(entry.name[len(_PREFIX) :])
                if not Path(f"/proc/{pid}").exists():
                    with contextlib.suppress(OSError):
                        os.rmdir(entry.path)


def sweep() -> None:
    """Remove the cgroups of this orchestrator's kernels once they are gone (and any other
    empty ones a dead kernel left beside them); called when a run ends."""
    for parent in set(cgroup_parents().values()):
        _sweep(parent)


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _enter_cgroups(limits: Limits) -> set[str]:
    """Move this process into cgroups of its own carrying ``limits``; the controllers that
    now enforce one (a failure leaves that controller to setrlimit)."""
    wanted = {"memory": limits.memory, "pids": limits.processes}
    enforced: set[str] = set()
    pid = os.getpid()
    for name, parent in cgroup_parents().items():
        value = wanted[name]
        if value is None:
            continue
        _sweep(parent)
        group = parent / f"{_PREFIX}{pid}"
        try:
            group.mkdir(exist_ok=True)
            if name == "pids":
                _write(group / "pids.max", str(value))
            elif (group / "memory.max").exists():  # v2
                _write(group / "memory.max", str(value))
                with contextlib.suppress(OSError):
                    _write(group / "memory.swap.max", "0")
            else:  # v1
                _write(group / "memory.limit_in_bytes", str(value))
                with contextlib.suppress(OSError):
                    _write(group / "memory.memsw.limit_in_bytes", str(value))
            _write(group / "cgroup.procs", str(pid))
        except OSError as exc:
            log.debug("rlm: no %s cgroup for the kernel: %s", name, exc)
            with contextlib.suppress(OSError):
                group.rmdir()
            continue
        enforced.add(name)
    return enforced


def _uid_tasks(uid: int) -> int:
    """Tasks (threads included, as RLIMIT_NPROC counts them) that ``uid`` runs now."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 ").split()[0]) == uid:
            count += int(fields.get("Threads", "1").strip() or 1)
    return count


def apply_from_env(env: Mapping[str, str]) -> set[str]:
    """Apply the limits ``env`` carries to this process (and what it starts); returns what
    is enforced (``memory-cgroup``, ``pids-cgroup``, ``RLIMIT_DATA``, ``RLIMIT_NPROC``).
    Call it single-threaded, before the Landlock policy (which makes cgroupfs read-only)."""
    limits = _read(env)
    if limits.memory is None and limits.processes is None:
        return set()
    done = {f"{name}-cgroup" for name in _enter_cgroups(limits)}
    if limits.memory is not None:
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory, limits.memory))
        done.add("RLIMIT_DATA")
    if limits.processes is not None and "pids-cgroup" not in done and os.geteuid() != 0:
        cap = _uid_tasks(os.getuid()) + limits.processes
        soft, hard = resource.getrlimit(resource.RLIMIT_NPROC)
        if hard != resource.RLIM_INFINITY:
            cap = min(cap, hard)
        if soft == resource.RLIM_INFINITY or cap < soft:
            resource.setrlimit(resource.RLIMIT_NPROC, (cap, cap))
        done.add("RLIMIT_NPROC")
    return done


def death_cause(pid: int | None, env: Mapping[str, str]) -> str | None:
    """Why the kernel ``pid`` (gone) died, when its limits say so: ``"memory limit 4G
    reached"`` when the OOM killer acted in its memory cgroup. Call before it restarts."""
    try:
        limits = _read(env)
    except ConfigError:
        return None
    if pid is None or limits.memory is None:
        return None
    parent = cgroup_parents().get("memory")
    if parent is None:
        return None
    group = parent / f"{_PREFIX}{pid}"
    for name in ("memory.events", "memory.oom_control"):  # v2, v1
        with contextlib.suppress(OSError, ValueError):
            for line in (group / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and int(value) > 0:
                    return f"memory limit {format_size(limits.memory)} reached"
    return None
