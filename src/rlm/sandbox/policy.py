"""Which sandbox a run uses (``RLM_SANDBOX``, ``RLM_NETWORK``) and how kernels and bash
commands are told: a few environment variables that the confined process reads before it
runs any code the model wrote (see :mod:`rlm.sandbox.landlock`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from rlm.errors import ConfigError
from rlm.sandbox import bwrap
from rlm.sandbox.landlock import abi_version
from rlm.sandbox.limits import LIMIT_VARS, limits_env, resolve_limits

__all__ = [
    "LAUNCH", "command_policy", "describe", "kernel_prefix", "resolve_mode", "sandbox_env",
    "wrap_command",
]  # fmt: skip

log = logging.getLogger("rlm.sandbox")

#: ``python -m`` target that applies the policy, then runs a module or execs a command.
LAUNCH = "rlm.sandbox.launch"
MODES = ("off", "workspace", "strict")
#: Modes whose processes confine themselves through ``python -m rlm.sandbox.launch``.
CONFINED = ("workspace", "strict")
_warned: set[str] = set()


def _warn_once(message: str, *args: object) -> None:
    """A fallback is said once per process (the CLI and the orchestrator both resolve)."""
    text = message % args if args else message
    if text not in _warned:
        _warned.add(text)
        log.warning("%s", text)


def resolve_mode(environ: Mapping[str, str] | None = None) -> str:
    """The sandbox this run gets: ``RLM_SANDBOX`` (default ``off``), checked.

    ``strict`` where bubblewrap cannot run falls back to ``workspace``, and ``workspace``
    where the kernel has no Landlock to ``off``, each with a warning, never silently. A bad
    value (or a bad ``RLM_NETWORK``) is a one-line ConfigError.
    """
    source = os.environ if environ is None else environ
    mode = source.get("RLM_SANDBOX", "off").strip().lower() or "off"
    if mode not in MODES:
        raise ConfigError(f"RLM_SANDBOX: expected 'off', 'workspace' or 'strict' (got {mode!r})")
    network = source.get("RLM_NETWORK", "on").strip().lower() or "on"
    if network not in ("on", "off"):
        raise ConfigError(f"RLM_NETWORK: expected 'on' or 'off' (got {network!r})")
    resolve_limits(source)  # RLM_KERNEL_MEMORY, RLM_KERNEL_PROCESSES: checked here too
    if mode == "strict":
        reason = bwrap.unusable()
        if reason is None:
            return mode
        _warn_once("rlm: RLM_SANDBOX=strict but %s: falling back to the workspace sandbox",
                   reason)  # fmt: skip
        mode = "workspace"
    if mode == "workspace":
        abi = abi_version()
        if abi < 1:
            _warn_once("rlm: RLM_SANDBOX=workspace but this system has no Landlock "
                       "(Linux >= 5.13 with Landlock enabled): kernels run unconfined")  # fmt: skip
            return "off"
        if network == "off" and abi < 4:
            _warn_once("rlm: RLM_NETWORK=off needs Landlock ABI 4 (this kernel has %d): "
                       "the network stays open", abi)  # fmt: skip
        log.info("rlm: sandbox workspace (Landlock ABI %d, network %s)", abi, network)
    return mode


def describe(mode: str) -> str:
    """What ``rlm`` says at start about the sandbox ``mode`` (as resolved)."""
    network = os.environ.get("RLM_NETWORK", "on").strip().lower() or "on"
    if mode == "strict":
        abi = abi_version()
        landlock = f" + Landlock ABI {abi}" if abi else ""
        return f"rlm: sandbox strict (bubblewrap{landlock}; writes: workspace only; network off)"
    if mode == "workspace":
        return (f"rlm: sandbox workspace (Landlock ABI {abi_version()}; writes: workspace only; "
                f"network {network})")  # fmt: skip
    return "rlm: sandbox off (cells run with your full access; RLM_SANDBOX=workspace|strict)"


def sandbox_env(
    mode: str, *, cwd: Path, run_dir: Path, hidden: Sequence[Path] = ()
) -> dict[str, str]:
    """Variables added to every kernel's environment for ``mode``: the kernel limits
    (:mod:`rlm.sandbox.limits`, any mode), and when confined the policy and a private temp
    dir inside the run directory. ``hidden`` (other runs' session logs) is emptied for
    ``strict`` kernels; ``strict`` has no network whatever ``RLM_NETWORK`` says (its own
    network namespace)."""
    if mode not in CONFINED:
        # Say "off" outright: a user's RLM_SANDBOX=workspace that fell back (no Landlock)
        # must not reach the kernels, whose start-up would then try to confine them.
        return {**limits_env(), "RLM_SANDBOX": "off"}
    tmp = run_dir / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    network = os.environ.get("RLM_NETWORK", "on").strip().lower() or "on"
    env = {
        **limits_env(),
        "RLM_SANDBOX": mode,
        "RLM_SANDBOX_WRITABLE": os.pathsep.join([str(cwd), str(run_dir)]),
        "RLM_NETWORK": "off" if mode == "strict" else network,
        "TMPDIR": str(tmp),
    }
    if mode == "strict" and hidden:
        env["RLM_SANDBOX_HIDDEN"] = os.pathsep.join(str(Path(p).absolute()) for p in hidden)
    # IPython refuses to start when it cannot create its directory (read-only for the
    # kernel): without an existing one, the kernel gets a fresh one in its temp dir.
    ipython_dir = Path(os.environ.get("IPYTHONDIR") or Path("~/.ipython")).expanduser()
    if not ipython_dir.is_dir():
        env["IPYTHONDIR"] = str(tmp / "ipython")
    return env


def wrap_command(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` run under the policy and kernel limits in ``env``, by a launcher that stays
    as the reaper of what ``argv`` detaches (no escapees, in any mode)."""
    return [*bwrap.command_prefix(env), sys.executable, "-m", LAUNCH, "--exec", *argv]


def kernel_prefix(env: Mapping[str, str]) -> list[str]:
    """What goes before ``-m ipykernel_launcher`` in a kernelspec for ``env``: the
    interpreter, with ``-m rlm.sandbox.launch`` when a sandbox or a kernel limit is on, under
    bwrap for ``strict``."""
    if env.get("RLM_SANDBOX") not in CONFINED:
        limited = any(env.get(name) for name in LIMIT_VARS)  # RLM_KERNEL_*: launch applies them
        return [sys.executable, "-m", LAUNCH] if limited else [sys.executable]
    return [*bwrap.command_prefix(env), sys.executable, "-m", LAUNCH]


def command_policy(kernel_env: Mapping[str, str] | None, cwd: Path) -> dict[str, str]:
    """The policy variables for a bash tool command: its agent's kernel's (same writable
    directories, same temp dir), else, without a kernel, the working directory only."""
    if kernel_env and kernel_env.get("RLM_SANDBOX") in CONFINED:
        names = (
            "RLM_SANDBOX",
            "RLM_SANDBOX_WRITABLE",
            "RLM_SANDBOX_HIDDEN",
            "RLM_NETWORK",
            "TMPDIR",
        )
        return {name: kernel_env[name] for name in names if name in kernel_env}
    mode = resolve_mode()
    if mode not in CONFINED:
        return {}
    network = os.environ.get("RLM_NETWORK", "on").strip().lower() or "on"
    network = "off" if mode == "strict" else network
    return {"RLM_SANDBOX": mode, "RLM_SANDBOX_WRITABLE": str(cwd), "RLM_NETWORK": network}
