"""``python -m rlm.sandbox.launch (-m MODULE | --exec COMMAND) ARGS...``: become the reaper
of this process's orphans (:mod:`rlm.sandbox.escapees`) and apply the sandbox
policy of this process's environment (:func:`rlm.sandbox.landlock.apply_from_env`; also the
kernel limits of :mod:`rlm.sandbox.limits` and, as root, :mod:`rlm.sandbox.caps`), then run
``MODULE`` as ``__main__`` (a cold-started kernel: ``-m ipykernel_launcher``) or exec
``COMMAND`` (a bash tool command). The policy is applied before any thread starts, so it
covers the whole process. If it cannot be applied, nothing runs (exit status 126)."""

from __future__ import annotations

import os
import runpy
import sys

from rlm.sandbox import caps, limits
from rlm.sandbox.escapees import become_subreaper
from rlm.sandbox.landlock import apply_from_env

#: As rlm.kernels.memory.OOM_SCORE_ADJ_OFFSET (not imported: that module loads zmq).
_OOM_SCORE_ADJ_OFFSET = 500


def _raise_oom_score() -> None:
    """Under bwrap the orchestrator can only raise ``bwrap``'s OOM score, after the kernel
    inherited its own: the kernel raises it itself (by as much; no privilege needed)."""
    try:
        with open("/proc/self/oom_score_adj", "r+") as handle:
            own = int(handle.read())
            handle.seek(0)
            handle.write(str(min(own + _OOM_SCORE_ADJ_OFFSET, 1000)))
    except (OSError, ValueError):
        pass


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0] not in ("-m", "--exec"):
        sys.stderr.write("usage: python -m rlm.sandbox.launch (-m MODULE | --exec COMMAND) ...\n")
        raise SystemExit(2)
    become_subreaper()
    if os.environ.get("RLM_SANDBOX") == "strict":
        _raise_oom_score()
    try:
        limits.apply_from_env(os.environ)  # first: cgroupfs is not writable under Landlock
        apply_from_env(os.environ)
        caps.drop_from_env(os.environ)  # last: a root process gives up its capabilities
    except OSError as exc:
        sys.stderr.write(f"rlm: cannot apply the sandbox: {exc}\n")
        raise SystemExit(126) from None
    if argv[0] == "--exec":
        os.execvp(argv[1], argv[1:])
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
