"""The ``edit`` tool: replace one exact, unique piece of text in an existing file.

Requiring exactly one occurrence makes the edit unambiguous: the model has to quote enough
of the file to pin down the place, and we never silently change the wrong spot. Every
failure leaves the file untouched and says what to fix. The new content is written to a
temporary file in the same directory and moved into place with ``os.replace``, so a crash
never leaves a half-written file, and the original permissions are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import tempfile
from pathlib import Path

from pydantic import BaseModel, Field

from rlm.agent.tools import remote
from rlm.agent.tools.base import Tool, ToolContext
from rlm.errors import ToolError
from rlm.safeio import format_size, read_regular

__all__ = ["EditTool"]

#: Bytes inspected for a NUL byte, the same heuristic git and grep use to spot binary files.
BINARY_SNIFF = 8192

#: Largest file the tool edits (it holds the file twice in memory, and the model could not
#: quote a unique piece of a bigger one anyway; use the ipython or bash tool for those).
MAX_EDIT_BYTES = 10 << 20

#: Lines of context shown before and after the changed lines.
CONTEXT_LINES = 3

#: Changed lines shown in full; longer replacements show their first and last lines only.
MAX_CHANGED_LINES = 20


class EditArgs(BaseModel):
    """Arguments of the ``edit`` tool."""

    path: str = Field(
        description="File to edit, relative to the working directory (absolute paths work too)."
    )
    old_str: str = Field(
        description=(
            "Exact text to replace, including whitespace and indentation. It must occur "
            "exactly once in the file; include surrounding lines to make it unique."
        )
    )
    new_str: str = Field(description="Text that replaces old_str (may be empty to delete it).")


class EditTool(Tool):
    """Replace exactly one occurrence of a string in a UTF-8 text file."""

    name = "edit"
    description = (
        "Edit an existing text file by replacing one exact occurrence of `old_str` with "
        "`new_str`. `old_str` must match the file character for character (whitespace and "
        "indentation included) and occur exactly once; if it occurs several times, add "
        "surrounding lines until it is unique. To delete text, pass an empty `new_str`. "
        f"This tool does not create files and edits text files of up to "
        f"{format_size(MAX_EDIT_BYTES)}. On success it shows the edited lines with line "
        "numbers so you can check the result."
    )
    Args = EditArgs

    async def run(self, args: EditArgs, ctx: ToolContext) -> str:
        """Apply the edit, or raise ``ToolError`` saying why not (the file is untouched).

        The file I/O runs in a thread under ``RLM_EXEC_TIMEOUT``: a slow or hung file system
        must not freeze the event loop, which also serves signals, sub-agents and the
        control channel."""
        timeout = ctx.settings.exec_timeout
        kernel = remote.kernel_of(ctx, self.name)
        if kernel is not None:  # RLM_KERNEL_GATEWAY: the file is where the kernel runs
            return await remote.call(kernel, self.name, args.model_dump(), timeout)
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._edit, args, ctx.cwd), timeout)
        except asyncio.TimeoutError:
            raise ToolError(
                f"editing {args.path} took longer than {timeout:g} s (RLM_EXEC_TIMEOUT); "
                "the file system does not answer. Nothing is known to have changed."
            ) from None

    def _edit(self, args: EditArgs, cwd: Path) -> str:
        path = Path(args.path).expanduser()
        if not path.is_absolute():
            path = cwd / path
        if not args.old_str:
            raise ToolError("old_str is empty; give the exact text to replace.")
        if path.is_dir():
            raise ToolError(f"{args.path} is a directory, not a file.")
        if not path.exists():
            raise ToolError(f"file not found: {args.path} (this tool only edits existing files)")
        # Write through symlinks to their target instead of replacing the link by a file.
        path = path.resolve()

        try:  # only a regular file, never blocking (a FIFO), never more than MAX_EDIT_BYTES
            data = read_regular(path, MAX_EDIT_BYTES, follow=True)
        except OSError as exc:
            raise ToolError(f"cannot edit {args.path}: {exc.strerror or exc}") from None
        if b"\0" in data[:BINARY_SNIFF]:
            raise ToolError(f"{args.path} is a binary file (it contains NUL bytes); not edited.")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ToolError(
                f"{args.path} is not valid UTF-8 text (binary file?); not edited."
            ) from None

        old, new = args.old_str, args.new_str
        count = _count(text, old)
        if count == 0 and "\r\n" in text and "\n" in old and "\r\n" not in old:
            # The file uses CRLF line endings; models almost always quote with plain LF.
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
            count = _count(text, old)
        if count == 0:
            raise ToolError(
                f"old_str was not found in {args.path} (0 occurrences); nothing was changed. "
                "Check whitespace and indentation, or read the file again to quote it exactly."
            )
        if count > 1:
            raise ToolError(
                f"old_str was found {count} times in {args.path}; nothing was changed. "
                "Include more surrounding context in old_str so that it matches exactly once."
            )
        if old == new:
            raise ToolError("old_str and new_str are identical; nothing to change.")

        start = text.index(old)
        updated = text[:start] + new + text[start + len(old) :]
        _write_atomic(path, updated.encode("utf-8"), args.path)

        first = text.count("\n", 0, start) + 1
        # A replacement ending in a newline ends on the line before the next one.
        last = first + max(0, new.count("\n") - new.endswith("\n"))
        return f"Edited {args.path} (lines {first}-{last}):\n{_snippet(updated, first, last)}"


def edit_here(path: str, old_str: str, new_str: str) -> str:
    """The edit in this process's working directory: what a remote kernel runs for the
    ``edit`` tool."""
    args = EditArgs(path=path, old_str=old_str, new_str=new_str)
    return EditTool()._edit(args, Path.cwd())


def _count(text: str, needle: str) -> int:
    """Occurrences of ``needle``, overlapping ones included ("aa" is ambiguous in "aaa")."""
    count, at = 0, text.find(needle)
    while at != -1:
        count += 1
        at = text.find(needle, at + 1)
    return count


def _write_atomic(path: Path, data: bytes, shown: str) -> None:
    """Replace ``path``'s content in one step, keeping its permission bits."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise ToolError(f"cannot write {shown}: {exc.strerror or exc}") from None


def _snippet(text: str, first: int, last: int) -> str:
    """Lines ``first``..``last`` (1-based) with some context, numbered like ``cat -n``."""
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()  # the empty "line" after the final newline
    start = max(1, first - CONTEXT_LINES)
    end = min(len(lines), last + CONTEXT_LINES)
    numbers = list(range(start, end + 1))
    if last - first + 1 > MAX_CHANGED_LINES:
        half = MAX_CHANGED_LINES // 2
        numbers = [n for n in numbers if n < first + half or n > last - half]
    out: list[str] = []
    for i, n in enumerate(numbers):
        if i and n != numbers[i - 1] + 1:
            out.append("   ...")
        out.append(f"{n:>6}\t{lines[n - 1].rstrip(chr(13))}")
    return "\n".join(out)
