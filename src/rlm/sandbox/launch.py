"""``python -m rlm.sandbox.launch (-m MODULE | --exec COMMAND) ARGS...``: become the reaper
of this process's orphans (:mod:`rlm.sandbox.escapees`) and apply the sandbox
policy of this process's environment (:func:`rlm.sandbox.landlock.apply_from_env`; also the
kernel limits of :mod:`rlm.sandbox.limits` and, as root, :mod:`rlm.sandbox.caps`), then run
``MODULE`` as ``__main__`` (a cold-started kernel: ``-m ipykernel_launcher``) or run
``COMMAND`` (a bash tool command). The policy is applied before any thread starts, so it
covers the whole process. If it cannot be applied, nothing runs (exit status 126).

``--exec`` forks ``COMMAND`` and stays as its reaper: a process the command detached
(``setsid``, a double fork) is re-parented to this subreaper instead of init, so when the
command exits the launcher kills what is left (after a short grace for background output)
and exits with the command's status; on a timeout the bash tool kills the launcher's
descendants itself, while the launcher still holds them."""

from __future__ import annotations

import os
import runpy
import signal
import sys
import time

from rlm.sandbox import caps, limits
from rlm.sandbox.escapees import become_subreaper, descendants, kill_descendants
from rlm.sandbox.landlock import apply_from_env

#: As rlm.kernels.memory.OOM_SCORE_ADJ_OFFSET (not imported: that module loads zmq).
_OOM_SCORE_ADJ_OFFSET = 500
#: Seconds background processes of a finished command may still run (and write output)
#: before they are killed; as rlm.agent.tools.bash.EXIT_GRACE.
EXIT_GRACE = 0.2


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
        _run_and_reap(argv[1:])
    sys.argv = [argv[1], *argv[2:]]
    runpy.run_module(argv[1], run_name="__main__", alter_sys=True)


def _reap() -> None:
    """Collect every exited child (the command's orphans are our children now)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _run_and_reap(command: list[str]) -> None:
    """Run ``command`` as our child, then kill whatever it left behind and exit as it did
    (a command killed by a signal makes the launcher die of the same signal)."""
    child = os.fork()
    if child == 0:
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            sys.stderr.write(f"rlm: cannot run {command[0]}: {exc}\n")
        os._exit(127)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _, status = os.waitpid(child, 0)
    deadline = time.monotonic() + EXIT_GRACE
    while time.monotonic() < deadline:  # a polling grace, not synchronisation
        _reap()
        if not descendants(os.getpid()):
            break
        time.sleep(0.01)
    kill_descendants(os.getpid())
    _reap()
    sys.stdout.flush()
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


if __name__ == "__main__":
    main(sys.argv[1:])
