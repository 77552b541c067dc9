"""rlm's one output-truncation policy: what is kept of a tool result that is too long, and
the note that says how much was dropped.

**Policy: head and tail.** Of a text longer than the limit, the first ``limit - limit // 2``
and the last ``limit // 2`` characters are kept and the middle is replaced by one line,
``[output truncated: N more characters dropped]``. The head says what the output is (the
command's first lines, the start of a table), the tail how it ended (the exception, the
summary line, the exit code); the middle is what a model can best do without.

Every tool result goes through this module: the ``ipython`` tool's collector
(:class:`rlm.kernels.output.OutputCollector`), the ``bash`` tool's capture, the agent's cap
on the other tools (:func:`truncate`). Pure standard library: the kernel side imports it
too, before any zmq or IPython is loaded.
"""

from __future__ import annotations

__all__ = ["NOTE", "Capture", "note", "truncate"]

#: The one truncation note; ``{n}`` is how many characters were dropped.
NOTE = "[output truncated: {n} more characters dropped]"


def note(dropped: int) -> str:
    """The note for ``dropped`` characters."""
    return NOTE.format(n=dropped)


def _join(head: str, dropped: int, tail: str) -> str:
    """``head``, the note on a line of its own, then ``tail``."""
    if head and not head.endswith("\n"):
        head += "\n"
    return f"{head}{note(dropped)}" + (f"\n{tail}" if tail else "")


def truncate(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (``-1``: no cap) by the head-and-tail policy."""
    if limit < 0 or len(text) <= limit:
        return text
    tail = limit // 2
    head = limit - tail
    return _join(text[:head], len(text) - limit, text[len(text) - tail :] if tail else "")


class Capture:
    """Text arriving in pieces, kept by the head-and-tail policy in bounded memory.

    The head fills first; everything after it goes to a tail buffer that is trimmed to its
    last ``limit // 2`` characters whenever it doubles, so memory stays ``O(limit)`` and the
    work ``O(n)`` however much arrives. Characters dropped before they got here (the kernel's
    own cap) are added with :meth:`drop` and counted in the same note.
    """

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError("a capture needs a positive limit")
        self.limit = limit
        self._head_limit = limit - limit // 2
        self._tail_limit = limit // 2
        self._head: list[str] = []
        self._head_len = 0
        self._tail: list[str] = []
        self._tail_len = 0
        self._cut = 0
        """Characters this capture dropped itself (from the middle)."""
        self._upstream = 0
        """Characters dropped before they reached it."""

    @property
    def dropped(self) -> int:
        """Every character dropped so far, here or upstream."""
        return self._cut + self._upstream + max(self._tail_len - self._tail_limit, 0)

    def add(self, text: str) -> None:
        if self._head_len < self._head_limit:
            taken = text[: self._head_limit - self._head_len]
            self._head.append(taken)
            self._head_len += len(taken)
            text = text[len(taken) :]
        if not text:
            return
        self._tail.append(text)
        self._tail_len += len(text)
        # Trim only once the tail is twice its size, so trimming stays amortised O(n).
        if self._tail_len > 2 * self._tail_limit:
            self._trim()

    def drop(self, count: int) -> None:
        """Count ``count`` characters dropped before they reached this capture."""
        self._upstream += max(count, 0)

    def _trim(self) -> None:
        joined = "".join(self._tail)
        cut = max(len(joined) - self._tail_limit, 0)
        self._cut += cut
        self._tail = [joined[cut:]] if len(joined) > cut else []
        self._tail_len = len(joined) - cut

    def text(self) -> str:
        """Everything kept; the note sits where characters were cut (at the end when only
        upstream characters were dropped)."""
        self._trim()
        head, tail = "".join(self._head), "".join(self._tail)
        if self._cut:
            return _join(head, self._cut + self._upstream, tail)
        if self._upstream:
            return _join(head + tail, self._upstream, "")
        return head + tail
