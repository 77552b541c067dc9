"""The kernel side of rlm: what ``import rlm`` means inside an agent's kernel.

``setup()`` runs once when the kernel starts. It takes the control settings and agent id out
of the environment. Requests go over the kernel's own Jupyter channels where ipykernel has
subshells (:mod:`rlm.inkernel.kernel_channel`), else (or with ``RLM_CONTROL_TRANSPORT=ipc``)
over the ipc control socket, signed with a secret of this agent; the control secret never is in it (``receive()`` gets it from the
orchestrator over the kernel's shell channel, so no other process can read it from
``/proc/<kernel>/environ``). ``setup()`` also makes
``asyncio.run`` usable in a cell: ipykernel already runs an event loop in the kernel's main
thread, where the stock ``asyncio.run`` refuses to start another, so inside a running loop
the coroutine runs to completion on a fresh loop in a helper thread while the cell waits.
An interrupt (timeout, Ctrl-C) cancels that coroutine, which cancels its sub-agents.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import socket
import sys
import threading
from collections.abc import Coroutine
from typing import Any

from rlm.control.channel import ControlClient
from rlm.control.inputs import pack_inputs
from rlm.errors import DepthLimitError, RLMError
from rlm.inkernel.kernel_channel import KernelChannelClient, supports_subshells
from rlm.inkernel.shutdown import ignore_zombies_at_shutdown, quiet_after_shutdown_reply

__all__ = ["active", "load_inputs", "receive", "run", "setup"]

_state: dict[str, Any] = {}
_original_asyncio_run = asyncio.run


def active() -> bool:
    """True inside a kernel started by an rlm orchestrator."""
    return bool(_state) or "RLM_CONTROL_ADDR" in os.environ


def setup() -> None:
    if _state:
        return
    _state["address"] = os.environ.pop("RLM_CONTROL_ADDR", None)
    _state["transport"] = os.environ.pop("RLM_CONTROL_TRANSPORT", "auto")
    _state["max_part"] = int(os.environ.pop("RLM_CONTROL_MAX_PART", str(128 * 1024 * 1024)))
    _state["agent_id"] = os.environ.pop("RLM_AGENT_ID")
    # An older orchestrator put the secret in the environment: never leave it to subprocesses.
    _state["secret"] = os.environ.pop("RLM_AGENT_SECRET", None)
    _state["depth"] = int(os.environ.get("RLM_DEPTH", "0"))
    _state["max_depth"] = int(os.environ.get("RLM_MAX_DEPTH", "0"))
    asyncio.run = _run_anywhere
    _guard_output(int(os.environ.get("RLM_KERNEL_OUTPUT_LIMIT", "0")))
    _die_with_parent()
    _wake_loop_on_signals()
    kernel = getattr(_shell(), "kernel", None)
    if kernel is not None:
        ignore_zombies_at_shutdown(kernel)
        quiet_after_shutdown_reply(kernel)


def receive(secret: str) -> None:
    """Take this agent's control secret (the orchestrator calls it after ``setup()``).

    The kernel stays dumpable: a non-dumpable process cannot open its own ``/proc/self/fd``
    or ``/proc/self/environ`` as a non-root user, which ordinary cell code does. Another
    same-uid process could still read the secret from this kernel's memory; keeping cells
    out of each other's processes is the sandbox's job, not this hand-over's.
    """
    _state["secret"] = secret


def _wake_loop_on_signals() -> None:
    """Let an interrupt (a cell timeout, Ctrl-C) reach a cell awaiting ``rlm.run``.

    During an async cell ipykernel turns SIGINT into a cancellation of the cell through a
    callback its signal handler schedules with ``call_soon``, which does not wake the event
    loop: a cell waiting on a sub-agent went on waiting, a timeout took it for a cell that
    ignores interrupts and restarted the kernel (all state lost), and the sub-agent ran on.
    Python writes each signal's number to the wakeup fd; the loop reading the other end of
    that socket pair wakes up and runs the pending callback at once.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    receive, send = socket.socketpair()
    receive.setblocking(False)
    send.setblocking(False)
    try:
        previous = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
    except ValueError:  # not the main thread: signals are not ours to watch
        previous = None
    if previous != -1:  # ``None`` or someone else's wakeup fd (which then wakes a loop)
        if previous is not None:
            signal.set_wakeup_fd(previous)
        receive.close()
        send.close()
        return

    def drain() -> None:
        try:
            while receive.recv(4096):
                pass
        except OSError:  # nothing left to read
            pass

    loop.add_reader(receive.fileno(), drain)
    _state["wakeup"] = (receive, send)  # kept open for the kernel's lifetime


class _BytesWriter:
    """``sys.stdout.buffer`` for a kernel: bytes are decoded (invalid UTF-8 replaced) and
    written to the text stream, as a terminal would show them."""

    def __init__(self, stream: Any) -> None:
        import codecs

        self._stream = stream
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def write(self, data: bytes) -> int:
        self._stream.write(self._decoder.decode(bytes(data)))
        return len(data)

    def flush(self) -> None:
        self._stream.flush()


def _guard_output(limit: int) -> None:
    """Give the kernel's streams a ``buffer`` and cap what one execution sends over IOPub,
    of every output type (see :mod:`rlm.inkernel.output`)."""
    for stream in (sys.stdout, sys.stderr):
        if not hasattr(stream, "buffer"):
            stream.buffer = _BytesWriter(stream)  # type: ignore[misc]
    session = getattr(getattr(_shell(), "kernel", None), "session", None)
    if limit > 0 and session is not None:
        from rlm.inkernel.output import install

        install(session, limit)


def _shell() -> Any:
    """The running IPython shell, or None outside a kernel."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _die_with_parent() -> None:
    """When the orchestrator dies (even by SIGKILL), take the whole process group down:
    ipykernel's own parent poller exits the kernel but leaves what its cells started."""
    parent = os.getppid()

    def watch() -> None:
        import signal
        import time

        while os.getppid() == parent:
            time.sleep(0.2)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    if os.getpgrp() == os.getpid():  # only a group leader may take its group down
        threading.Thread(target=watch, name="rlm-parent-watch", daemon=True).start()


def _ipc_client() -> ControlClient:
    if not _state["address"]:
        raise RLMError("this kernel has no control path to its orchestrator")
    return ControlClient(_state["address"], _state["agent_id"], _state["secret"])


def _client() -> ControlClient | KernelChannelClient:
    """The transport requests take: the kernel's own channels where this ipykernel has
    subshells (the orchestrator creates one for every such kernel unless
    ``RLM_CONTROL_TRANSPORT=ipc``), else the ipc socket."""
    if not _state:
        setup()
    channel = _state.get("channel")
    if channel is None and _state["transport"] != "ipc":
        kernel = getattr(_shell(), "kernel", None)
        if kernel is not None and supports_subshells(kernel):
            fallback = _ipc_client if _state["address"] else None
            channel = _state["channel"] = KernelChannelClient(kernel, _state["max_part"], fallback)
    return channel if channel is not None else _ipc_client()


def _run_anywhere(main: Coroutine[Any, Any, Any], *, debug: bool | None = None) -> Any:
    """``asyncio.run`` that also works where a loop is already running (a kernel cell)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _original_asyncio_run(main, debug=debug)
    box: dict[str, Any] = {}
    started = threading.Event()

    async def wrapper() -> Any:
        box["loop"], box["task"] = asyncio.get_running_loop(), asyncio.current_task()
        started.set()
        return await main

    def target() -> None:
        try:
            box["result"] = _original_asyncio_run(wrapper(), debug=debug)
        except BaseException as exc:
            box["error"] = exc
        finally:
            started.set()

    thread = threading.Thread(target=target, name="rlm-asyncio-run", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(0.05)
    except KeyboardInterrupt:
        started.wait()
        if "loop" in box:
            box["loop"].call_soon_threadsafe(box["task"].cancel)
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box.get("result")


def _current_cell() -> str | None:
    """The id of the execute request (cell) this code belongs to.

    ipykernel keeps the parent message in a context variable, which a task created in a cell
    inherits: a sub-agent started with ``asyncio.ensure_future(rlm.run(...))`` still names the
    cell that created it when its request goes out after that cell ended, and the
    orchestrator refuses it (children never outlive their cell).
    """
    try:
        from IPython import get_ipython

        shell = get_ipython()
        kernel = getattr(shell, "kernel", None)
        if kernel is None:
            return None
        parent = kernel.get_parent("shell")
    except Exception:  # not in a kernel, or an ipykernel without get_parent
        return None
    msg_id = (parent or {}).get("header", {}).get("msg_id")
    return str(msg_id) if msg_id else None


def child_request(
    task: str | None,
    inputs: dict[str, Any] | None,
    model: str | None,
    max_turns: int | None,
    tools: list[str] | str | None,
) -> tuple[dict[str, Any], list[bytes]]:
    """The content and buffers of a request for a sub-agent (``rlm.run``, ``rlm.spawn``),
    after the local depth check (the orchestrator checks again from its own record)."""
    depth, max_depth = _state.get("depth", 0), _state.get("max_depth", 0)
    if depth + 1 > max_depth:
        raise DepthLimitError(
            f"no sub-agent allowed here: this agent is at depth {depth} and RLM_MAX_DEPTH is "
            f"{max_depth}"
        )
    infos, blobs = pack_inputs(inputs)
    if isinstance(tools, (list, tuple)):
        tools = ",".join(tools)
    content = {
        "task": task,
        "inputs": infos,
        "model": model,
        "max_turns": max_turns,
        "tools": tools,
        "cell": _current_cell(),
    }
    # a kernel never spills its inputs to disk: every blob is bytes here
    return content, [blob for blob in blobs if isinstance(blob, bytes)]


async def run(
    task: str,
    *,
    inputs: dict[str, Any] | None = None,
    model: str | None = None,
    max_turns: int | None = None,
    tools: list[str] | str | None = None,
) -> str:
    """Ask the orchestrator for a sub-agent and wait for its answer."""
    content, data = child_request(task, inputs, model, max_turns, tools)
    reply, _ = await _client().request("run_request", content, data)
    if reply.get("status") == "ok":
        return str(reply["answer"])
    raise _decode_error(reply)


def _decode_error(reply: dict[str, Any]) -> RLMError:
    """The exception of an error reply, decoded by the one codec of :mod:`rlm.schema.control`
    (imported on the first failure only: a kernel that never sees one never loads pydantic)."""
    from rlm.schema.control import decode_error

    return decode_error(reply)


async def load_inputs(only: list[str] | None = None) -> list[str]:
    """Fetch this agent's inputs (all, or those named in ``only``) and define them as
    variables of the user namespace."""
    content: dict[str, Any] = {} if only is None else {"names": list(only)}
    reply, blobs = await _client().request("inputs_request", content)
    if reply.get("status") == "error":
        raise _decode_error(reply)
    names = [info["name"] for info in reply.get("inputs", [])]
    values = {name: pickle.loads(blob) for name, blob in zip(names, blobs, strict=True)}
    if only is not None:
        values = {name: value for name, value in values.items() if name in only}
    main = sys.modules["__main__"].__dict__
    try:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None:
            main = shell.user_ns
    except ImportError:
        pass
    main.update(values)
    return list(values)
