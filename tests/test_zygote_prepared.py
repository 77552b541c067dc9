"""What the zygote builds before it forks leaves its process as it found it
(rlm.zygote.prepared)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_warm_up_shell_is_gone_and_the_process_state_is_back():
    """The throwaway IPython shell changes the environment, ``__main__``, ``sys.path``, the
    ``sys`` hooks and builtins while it is built: all of it is restored, no shell survives a
    collection, and no thread was started (the zygote must be able to fork)."""
    code = textwrap.dedent(
        """
        import builtins, gc, os, sys, threading
        import ipykernel.kernelapp, ipykernel.zmqshell
        from ipykernel.zmqshell import ZMQInteractiveShell

        def state():
            hooks = [getattr(sys, n, None) for n in ("excepthook", "displayhook", "stdout", "ps1")]
            return (
                dict(os.environ), sys.modules["__main__"], list(sys.path), hooks,
                dict(builtins.__dict__),
            )

        before = state()
        from rlm.zygote.prepared import prepare
        prepare()
        gc.collect()
        shells = [o for o in gc.get_objects() if isinstance(o, ZMQInteractiveShell)]
        print(state() == before, len(shells), threading.active_count())
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "0", "1"], done.stderr[-2000:]
