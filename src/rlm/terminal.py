"""Text for a terminal: what rlm prints to a person must not drive their terminal.

Endpoint error bodies, model-chosen tool names, tasks and cell output are written by others
(an endpoint, a model, model-written code). Printed raw, ``ESC[2J`` clears the screen,
``ESC]0;...BEL`` retitles the window, ``\\r`` overwrites a line, U+202E reverses what
follows, and a 100,000-character tool name buries everything else. :func:`safe` is applied
to every such text on its way to stderr (error lines, progress, the live view, ``rlm sessions
show``). The answer on stdout is data and stays byte-exact.

Shared by the CLI and the log renderer, so it depends on nothing in rlm.
"""

from __future__ import annotations

import re

__all__ = ["NAME_LIMIT", "safe"]

#: Characters kept of a name (tool, agent, model) before it is cut with "…".
NAME_LIMIT = 200

# ESC sequences: CSI (ESC [ ... final), OSC/DCS/SOS/PM/APC strings (ESC ] ... BEL or ESC \),
# and two-character escapes (ESC + one byte); the same introduced by their C1 forms.
_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -~]?"
)
# What is left that a terminal acts on: C0 except \n and \t, DEL, C1, and the bidi controls.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, limit: int | None = None) -> str:
    """``text`` with escape sequences removed and other control characters shown escaped
    (``\\x0d`` for ``\\r``, ``\\u202e``); newlines and tabs kept. With ``limit``, at most that
    many characters, the last one "…"."""
    out = _CONTROL.sub(_escape, _SEQUENCE.sub("", str(text)))
    if limit is not None and len(out) > limit:
        out = out[: max(limit - 1, 0)] + "…"
    return out
