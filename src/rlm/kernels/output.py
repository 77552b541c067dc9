"""What one cell showed: the text the model reads and the structured outputs the log keeps.

The kernel already capped every output it sent (``rlm.inkernel.output``) and put how many
characters it dropped in the message's ``rlm_dropped`` key; the :class:`OutputCollector`
adds what it drops itself and keeps the model's text by rlm's one truncation policy
(:mod:`rlm.truncation`). Alongside, it keeps the IOPub messages themselves (``msg_type`` and
``content``: streams, values, displays with their MIME bundles, errors), capped for the log,
so notebook export can rebuild real outputs with ``nbformat.v4.output_from_msg``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from rlm.truncation import Capture, truncate

__all__ = ["MAX_LOGGED_OUTPUTS", "MEMORY_CEILING", "RICH_LOG_LIMIT", "OutputCollector"]

#: Hard ceiling on what one execution may keep in memory when no cap is configured.
MEMORY_CEILING = 1_000_000
#: Largest non-text MIME value (a base64 image, a widget state) the log keeps per output:
#: small plots are worth keeping, a 50 MB image is not.
RICH_LOG_LIMIT = 256_000
#: Outputs of one cell the log keeps; a cell displaying in a loop stops being logged here.
MAX_LOGGED_OUTPUTS = 100

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_RICH = ("execute_result", "display_data")
_SHOWN = frozenset({"stream", "error", *_RICH})


def _is_text(mime: str) -> bool:
    return mime.startswith("text/") or mime in ("image/svg+xml", "application/javascript")


def _dropped(content: dict[str, Any]) -> int:
    """What the kernel says it cut (anything but a positive int, as a forged message could
    carry, counts as nothing)."""
    value = content.get("rlm_dropped")
    return value if isinstance(value, int) and value > 0 else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _lines(content: dict[str, Any]) -> list[str]:
    """An error's traceback lines."""
    lines = content.get("traceback")
    return [str(line) for line in lines] if isinstance(lines, list) else []


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(json.dumps(value, default=str))


class OutputCollector:
    """Takes the IOPub messages of one execution, in order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit if limit > 0 else MEMORY_CEILING
        self._text = Capture(self.limit)
        self._outputs: list[dict[str, Any]] = []
        self._streams: dict[int, Capture] = {}
        """Index in ``_outputs`` of a stream entry -> its text, merged and capped."""
        self._not_logged = 0

    @property
    def dropped(self) -> int:
        """Characters of the model's text dropped so far (in the kernel and here)."""
        return self._text.dropped

    def handle(self, msg: dict[str, Any]) -> None:
        """Take one IOPub message of the running cell."""
        kind, content = msg["header"]["msg_type"], _dict(msg.get("content"))
        if kind not in _SHOWN:
            return  # status, clear_output, update_display_data, comms: not a cell output
        self._text.drop(_dropped(content))
        if kind == "stream":
            text = str(content.get("text", "")).replace("\r\n", "\n")
            self._text.add(text)
            self._log_stream(str(content.get("name") or "stdout"), text, content)
        elif kind in _RICH:
            data = _dict(content.get("data"))
            plain = data.get("text/plain")
            if isinstance(plain, str):
                self._text.add(_ANSI.sub("", plain) + "\n")
            others = sorted(k for k in data if k != "text/plain")
            if others:
                self._text.add(f"[{kind}: {', '.join(others)} not shown]\n")
            self._log(kind, self._rich_content(kind, content))
        elif kind == "error":
            trace = _lines(content) or [f"{content.get('ename')}: {content.get('evalue')}"]
            self._text.add(_ANSI.sub("", "\n".join(trace)) + "\n")
            self._log(kind, self._error_content(content))

    def text(self) -> str:
        """What the model reads: at most ``limit`` characters and the truncation note."""
        return self._text.text()

    def outputs(self) -> list[dict[str, Any]]:
        """The cell's outputs for the log: ``{"msg_type", "content"}`` each, capped."""
        out = []
        for index, entry in enumerate(self._outputs):
            capture = self._streams.get(index)
            if capture is not None:
                entry = {**entry, "content": {**entry["content"], "text": capture.text()}}
            out.append(entry)
        if self._not_logged:
            text = f"[{self._not_logged} more output(s) of this cell not logged]\n"
            out.append({"msg_type": "stream", "content": {"name": "stderr", "text": text}})
        return out

    # -- the log's copy ----------------------------------------------------------------------

    def _log(self, kind: str, content: dict[str, Any]) -> None:
        if len(self._outputs) >= MAX_LOGGED_OUTPUTS:
            self._not_logged += 1
            return
        self._outputs.append({"msg_type": kind, "content": content})

    def _log_stream(self, name: str, text: str, content: dict[str, Any]) -> None:
        """Consecutive pieces of one stream are one output, as a notebook shows them."""
        last = len(self._outputs) - 1
        if last in self._streams and self._outputs[last]["content"]["name"] == name:
            capture = self._streams[last]
        else:
            self._log("stream", {"name": name})
            if len(self._outputs) - 1 == last:  # not logged: over MAX_LOGGED_OUTPUTS
                return
            capture = self._streams[len(self._outputs) - 1] = Capture(self.limit)
        capture.drop(_dropped(content))
        capture.add(text)

    def _rich_content(self, kind: str, content: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        not_logged: dict[str, int] = {}
        for mime, value in _dict(content.get("data")).items():
            if _is_text(mime) and isinstance(value, str):
                data[mime] = truncate(value, self.limit)
            elif (size := _size(value)) <= RICH_LOG_LIMIT:
                data[mime] = value
            else:
                not_logged[mime] = size
        metadata = dict(_dict(content.get("metadata")))
        if not_logged:
            metadata["rlm_not_logged"] = not_logged  # MIME type -> its size in characters
        if _dropped(content):
            metadata["rlm_dropped"] = _dropped(content)  # cut in the kernel
        out: dict[str, Any] = {"data": data, "metadata": metadata}
        if kind == "execute_result":
            out["execution_count"] = content.get("execution_count")
        return out

    def _error_content(self, content: dict[str, Any]) -> dict[str, Any]:
        trace = "\n".join(_lines(content))
        return {
            "ename": str(content.get("ename", "")),
            "evalue": truncate(str(content.get("evalue", "")), self.limit),
            "traceback": truncate(trace, self.limit).split("\n") if trace else [],
        }
