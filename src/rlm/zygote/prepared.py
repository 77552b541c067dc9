"""The kernel application, built and its command line parsed in the zygote before fork.

Parsing ``IPKernelApp``'s command line walks the traits, help strings and aliases of every
configurable class. In a forked child that walk touches (reference counts) objects on
hundreds of pages shared with the zygote, and each touched page is copied: ~2.5-3 MiB of
private memory per kernel for a result that is the same for every kernel. So the zygote
creates the ``IPKernelApp`` singleton and parses rlm's kernelspec flags once, with a
placeholder for the connection file; a child whose command line has exactly those flags
puts its connection file in the parsed configuration and initialises that app without
parsing again. Any other command line is parsed in the child as before.

Nothing here creates a socket, thread or event loop: ``parse_command_line`` only fills the
app's configuration.
"""

from __future__ import annotations

from typing import Any

__all__ = ["KERNEL_FLAGS", "PLACEHOLDER", "kernel_app", "prepare"]

#: The flags rlm's kernelspec passes after ``-f {connection_file}``
#: (:meth:`rlm.kernels.kernel.Kernel.start` writes its kernelspec from this tuple).
KERNEL_FLAGS: tuple[str, ...] = ("--HistoryManager.enabled=False", "--IPKernelApp.quiet=True")

#: Stands for the connection file while the zygote parses.
PLACEHOLDER = "{connection_file}"


def prepare() -> None:
    """In the zygote: create the ``IPKernelApp`` singleton and parse the common command line;
    its kernel class is :class:`~rlm.zygote.kernel.ForkedKernel` (a kernel config file may
    still name another)."""
    from ipykernel.kernelapp import IPKernelApp

    from rlm.zygote.kernel import ForkedKernel

    app = IPKernelApp.instance()
    app.parse_command_line(["-f", PLACEHOLDER, *KERNEL_FLAGS])
    app.kernel_class = ForkedKernel
    warm_shell(app.config)


def warm_shell(config: Any) -> None:
    """Build one IPython shell with the kernels' configuration and throw it away.

    Building a shell fills class-level and module-level caches (traitlets' per-class trait
    tables, IPython's magics and transformers, compiled regexes...) that every kernel would
    otherwise build for itself after the fork: built here they are shared (~0.45 MiB less
    per child, measured; ~11 ms once in the zygote). Each kernel still builds its own shell.
    What the shell changes in the process (environment, ``__main__``, ``sys.path``, the
    ``sys`` hooks, builtins, its exit hook) is put back. A failure (say, an unwritable
    IPython directory) skips the warm-up: the zygote must still start.
    """
    import atexit
    import builtins
    import os
    import sys

    from ipykernel.zmqshell import ZMQInteractiveShell

    environ = dict(os.environ)
    main = sys.modules["__main__"]
    path = list(sys.path)
    hooks = {name: getattr(sys, name) for name in _SYS_HOOKS if hasattr(sys, name)}
    names = dict(builtins.__dict__)
    try:
        shell = ZMQInteractiveShell(config=config)
        atexit.unregister(shell.atexit_operations)
        for code in _WARM_CELLS:
            shell.compile.ast_parse(shell.transform_cell(code))
    except Exception as exc:  # only a saving: a kernel that cannot build its shell says so
        print(f"rlm zygote: shell warm-up skipped: {exc!r}", file=sys.stderr, flush=True)
    finally:
        os.environ.clear()
        os.environ.update(environ)
        sys.modules["__main__"] = main
        sys.path[:] = path
        for name in _SYS_HOOKS:
            if name in hooks:
                setattr(sys, name, hooks[name])
            elif hasattr(sys, name):
                delattr(sys, name)
        builtins.__dict__.clear()
        builtins.__dict__.update(names)


_SYS_HOOKS = ("excepthook", "displayhook", "stdin", "stdout", "stderr", "ps1", "ps2")

#: Cells like the ones every kernel runs first: its bootstrap, a magic, a shell command.
_WARM_CELLS = ("import os\nx = 1\nprint(os.getpid())", "%time 1", "!true")


def _skip_parse(argv: Any = None) -> None:
    """Stands in for ``parse_command_line``: the zygote parsed it (see the module docstring)."""


def kernel_app(args: list[str]) -> tuple[Any, list[str]]:
    """In the child: the app to initialise for kernel arguments ``args`` and the argv to
    pass to its ``initialize``.

    ``args`` is ``["-f", FILE, *KERNEL_FLAGS]``: the prepared app, its configuration pointing
    at FILE. Anything else: a fresh app that parses ``args`` itself.
    """
    from ipykernel.kernelapp import IPKernelApp

    prepared = IPKernelApp.initialized() and IPKernelApp.instance().argv[:1] == ["-f"]
    if prepared and args[:1] == ["-f"] and len(args) > 1 and tuple(args[2:]) == KERNEL_FLAGS:
        app = IPKernelApp.instance()
        app.argv = list(args)
        app.cli_config.IPKernelApp.connection_file = args[1]
        app.update_config(app.cli_config)
        # The rest of initialize (profile, config files, sockets, kernel) runs as usual.
        app.parse_command_line = _skip_parse  # type: ignore[method-assign]
        return app, []
    IPKernelApp.clear_instance()
    return IPKernelApp.instance(), list(args)
