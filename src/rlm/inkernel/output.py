"""The kernel's own output cap: what one execution may send over IOPub, of every type.

A cell that prints, returns, displays or raises 100 MB would otherwise make the
orchestrator receive, decode and hold 100 MB (several times over while JSON is parsed) just
to keep 2,000 characters of it. So the kernel's ``Session.send`` is wrapped: before a
``stream``, ``execute_result``, ``display_data``, ``update_display_data`` or ``error``
message leaves the kernel (and the traceback of an ``execute_reply``), its content is cut to what the execution (its parent message)
still has room for, and the number of characters cut goes into the content's
``rlm_dropped`` key, which the orchestrator's collector adds to its truncation note.

Budgets, per execution: streams, values and displays share ``limit`` characters; the error
gets ``limit`` of its own, so a cell that printed too much still shows how it failed. The
kernel keeps the head of streams and text (it cannot know the tail before the cell ends), a
non-text MIME value only whole (a cut image is garbage), and the head and tail of a
traceback (whose last line is the exception). The policy the model sees is applied later,
in the orchestrator, by :mod:`rlm.truncation`.
"""

from __future__ import annotations

import json
import threading
from typing import Any

__all__ = ["CAPPED", "OutputCap", "install"]

#: IOPub message types whose content the cap cuts.
CAPPED = frozenset({"stream", "execute_result", "display_data", "update_display_data", "error"})
#: Executions remembered at once; older ones are forgotten (their output is long sent).
_REMEMBERED = 64


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value, default=str))


def _parent_id(parent: Any) -> str:
    """The msg_id of ``parent``, given as a whole message or as its header."""
    if not isinstance(parent, dict):
        return ""
    header = parent.get("header")
    return str((header if isinstance(header, dict) else parent).get("msg_id", ""))


class OutputCap:
    """Per-execution budgets and the cutting of one message's content."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        self._lock = threading.Lock()  # streams are sent from ipykernel's IOPub thread

    def cap(self, kind: str, parent: str, content: dict[str, Any]) -> dict[str, Any]:
        """``content`` cut to the room left for execution ``parent`` (a new dict if cut)."""
        with self._lock:
            budgets = self._errors if kind == "error" else self._used
            if parent not in budgets and len(budgets) >= _REMEMBERED:
                budgets.clear()
            room = max(self.limit - budgets.get(parent, 0), 0)
            if kind == "stream":
                content, used, dropped = self._stream(content, room)
            elif kind == "error":
                content, used, dropped = self._error(content, room)
            else:
                content, used, dropped = self._bundle(content, room)
            budgets[parent] = budgets.get(parent, 0) + used
        if dropped:
            content["rlm_dropped"] = dropped
        return content

    def reply(self, content: dict[str, Any]) -> dict[str, Any]:
        """An ``execute_reply`` repeats the error's traceback on the shell channel: cut it
        the same way (the count is already in the error message)."""
        if content.get("status") != "error":
            return content
        return self._error(content, self.limit)[0]

    @staticmethod
    def _stream(content: dict[str, Any], room: int) -> tuple[dict[str, Any], int, int]:
        text = content.get("text")
        if not isinstance(text, str) or len(text) <= room:
            return content, len(text) if isinstance(text, str) else 0, 0
        return {**content, "text": text[:room]}, room, len(text) - room

    @staticmethod
    def _bundle(content: dict[str, Any], room: int) -> tuple[dict[str, Any], int, int]:
        data = content.get("data")
        if not isinstance(data, dict):
            return content, 0, 0
        kept: dict[str, Any] = {}
        used = dropped = 0
        # text/plain first: it is what the model reads
        for mime in sorted(data, key=lambda m: m != "text/plain"):
            value, left = data[mime], room - used
            size = _size(value)
            if size <= left:
                kept[mime], used = value, used + size
            elif mime == "text/plain" and isinstance(value, str):
                kept[mime], used, dropped = value[:left], room, dropped + size - left
            else:
                dropped += size
        if not dropped:
            return content, used, 0
        return {**content, "data": kept}, used, dropped

    @staticmethod
    def _error(content: dict[str, Any], room: int) -> tuple[dict[str, Any], int, int]:
        lines = content.get("traceback")
        evalue = content.get("evalue")
        out = dict(content)
        if isinstance(evalue, str) and len(evalue) > room:
            out["evalue"] = evalue[:room]  # the traceback's last line repeats it
        if not isinstance(lines, list):
            return out, 0, 0
        trace = "\n".join(map(str, lines))
        if len(trace) <= room:
            return out, len(trace), 0
        tail = room // 2
        head = room - tail
        out["traceback"] = (trace[:head] + "\n" + trace[len(trace) - tail :]).split("\n")
        return out, room, len(trace) - room


def install(session: Any, limit: int) -> OutputCap:
    """Wrap ``session.send`` (the kernel's one Session, shared by its streams, display hook,
    display publisher and shell) so every capped IOPub message is cut before it is sent."""
    cap = OutputCap(limit)
    original = session.send

    def send(
        stream: Any,
        msg_or_type: Any,
        content: Any = None,
        parent: Any = None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if isinstance(msg_or_type, dict):
            kind = (msg_or_type.get("header") or {}).get("msg_type")
            if kind in CAPPED and isinstance(msg_or_type.get("content"), dict):
                key = _parent_id(msg_or_type.get("parent_header"))
                msg_or_type = {**msg_or_type, "content": cap.cap(kind, key, msg_or_type["content"])}
        elif msg_or_type in CAPPED and isinstance(content, dict):
            content = cap.cap(msg_or_type, _parent_id(parent), content)
        elif msg_or_type == "execute_reply" and isinstance(content, dict):
            content = cap.reply(content)
        return original(stream, msg_or_type, content, parent, *args, **kwargs)

    session.send = send
    return cap
