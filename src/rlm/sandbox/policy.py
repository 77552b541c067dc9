"""Which sandbox a run uses (``RLM_SANDBOX``, ``RLM_NETWORK``) and how kernels and bash
commands are told: a few environment variables that the confined process reads before it
runs any code the model wrote (see :mod:`rlm.sandbox.landlock`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from rlm.errors import ConfigError
from rlm.sandbox.landlock import abi_version

__all__ = ["LAUNCH", "command_policy", "resolve_mode", "sandbox_env", "wrap_command"]

log = logging.getLogger("rlm.sandbox")

#: ``python -m`` target that applies the policy, then runs a module or execs a command.
LAUNCH = "rlm.sandbox.launch"
MODES = ("off", "workspace")


def resolve_mode(environ: Mapping[str, str] | None = None) -> str:
    """The sandbox this run gets: ``RLM_SANDBOX`` (default ``off``), checked.

    ``workspace`` where the kernel has no Landlock falls back to ``off`` with a warning,
    never silently. A bad value (or a bad ``RLM_NETWORK``) is a one-line ConfigError.
    """
    source = os.environ if environ is None else environ
    mode = source.get("RLM_SANDBOX", "off").strip().lower() or "off"
    if mode not in MODES:
        raise ConfigError(f"RLM_SANDBOX: expected 'off' or 'workspace' (got {mode!r})")
    network = source.get("RLM_NETWORK", "on").strip().lower() or "on"
    if network not in ("on", "off"):
        raise ConfigError(f"RLM_NETWORK: expected 'on' or 'off' (got {network!r})")
    if mode == "workspace":
        abi = abi_version()
        if abi < 1:
            log.warning("rlm: RLM_SANDBOX=workspace but this system has no Landlock "
                        "(Linux >= 5.13 with Landlock enabled): kernels run unconfined")  # fmt: skip
            return "off"
        if network == "off" and abi < 4:
            log.warning("rlm: RLM_NETWORK=off needs Landlock ABI 4 (this kernel has %d): "
                        "the network stays open", abi)  # fmt: skip
        log.info("rlm: sandbox workspace (Landlock ABI %d, network %s)", abi, network)
    return mode


def sandbox_env(mode: str, *, cwd: Path, run_dir: Path) -> dict[str, str]:
    """Variables added to every kernel's environment for ``mode`` (none for ``off``): the
    policy, and a private temp dir inside the run directory."""
    if mode != "workspace":
        return {}
    tmp = run_dir / "tmp"
    tmp.mkdir(mode=0o700, exist_ok=True)
    network = os.environ.get("RLM_NETWORK", "on").strip().lower() or "on"
    env = {
        "RLM_SANDBOX": "workspace",
        "RLM_SANDBOX_WRITABLE": os.pathsep.join([str(cwd), str(run_dir)]),
        "RLM_NETWORK": network,
        "TMPDIR": str(tmp),
    }
    # IPython refuses to start when it cannot create its directory (read-only for the
    # kernel): without an existing one, the kernel gets a fresh one in its temp dir.
    ipython_dir = Path(os.environ.get("IPYTHONDIR") or Path("~/.ipython")).expanduser()
    if not ipython_dir.is_dir():
        env["IPYTHONDIR"] = str(tmp / "ipython")
    return env


def wrap_command(argv: list[str], env: Mapping[str, str]) -> list[str]:
    """``argv`` run under the policy in ``env`` (unchanged when there is none)."""
    if env.get("RLM_SANDBOX") != "workspace":
        return argv
    return [sys.executable, "-m", LAUNCH, "--exec", *argv]


def command_policy(kernel_env: Mapping[str, str] | None, cwd: Path) -> dict[str, str]:
    """The policy variables for a bash tool command: its agent's kernel's (same writable
    directories, same temp dir), else, without a kernel, the working directory only."""
    if kernel_env and kernel_env.get("RLM_SANDBOX") == "workspace":
        names = ("RLM_SANDBOX", "RLM_SANDBOX_WRITABLE", "RLM_NETWORK", "TMPDIR")
        return {name: kernel_env[name] for name in names if name in kernel_env}
    if resolve_mode() != "workspace":
        return {}
    network = os.environ.get("RLM_NETWORK", "on").strip().lower() or "on"
    return {"RLM_SANDBOX": "workspace", "RLM_SANDBOX_WRITABLE": str(cwd), "RLM_NETWORK": network}
