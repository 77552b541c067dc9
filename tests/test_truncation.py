"""One truncation policy for every tool result: head and tail, one note with the count.

Real runs with the scripted model; what is checked is what the model received.
"""

from __future__ import annotations

import re

import pytest

import rlm
from scripted_model import ScriptedModel, call, ipython, reply

LIMIT = 200
NOTE = re.compile(r"\[output truncated: (\d+) more characters dropped\]")


def tool_results(model: ScriptedModel) -> list[str]:
    return [m["content"] for m in model.requests[-1]["messages"] if m["role"] == "tool"]


def one_note(result: str) -> int:
    """The count of the only truncation note in ``result``."""
    notes = NOTE.findall(result)
    assert len(notes) == 1, result
    return int(notes[0])


async def test_every_tool_keeps_head_and_tail_with_one_note(
    model: ScriptedModel, rlm_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RLM_MAX_OUTPUT", str(LIMIT))
    monkeypatch.setenv("RLM_TOOLS", "ipython,bash")
    printed = "BEGIN\n" + "x" * 10_000 + "\nEND\n"
    unknown = "n" * 1000
    model.script(
        reply(None, ipython("print('BEGIN'); print('x' * 10_000); print('END')")),
        reply(
            None,
            call("bash", {"command": "echo BEGIN; printf 'x%.0s' $(seq 10000); echo; echo END"}),
        ),
        reply(None, call(unknown, {})),
        reply("done"),
    )
    assert await rlm.run("big outputs") == "done"
    cell, shell, error = tool_results(model)

    assert cell.startswith("BEGIN\nxxx") and cell.endswith("xxx\nEND")
    assert one_note(cell) == len(printed) - LIMIT
    # bash's own exit-code line survives the cap (it is not cut again by the agent)
    assert shell.startswith("BEGIN\nxxx") and shell.endswith("xxx\nEND\n[exit code: 0]")
    assert one_note(shell) == len(printed) - LIMIT
    # any other result (here a tool error) is cut by the same policy
    full = f"Error: unknown tool {unknown!r}; available: ipython, bash"
    assert error.startswith("Error: unknown tool 'nnn") and error.endswith(
        "available: ipython, bash"
    )
    assert one_note(error) == len(full) - LIMIT
    for result in (cell, shell, error):
        assert len(result) < LIMIT + 80, result


async def test_a_flood_then_an_exception_still_ends_with_the_exception(
    model: ScriptedModel, rlm_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's own cap (1,000,000 characters here) gives the traceback a budget of its
    own: a cell that printed more than that and then raised still tells the model how it
    failed, and the note counts what the kernel dropped."""
    monkeypatch.setenv("RLM_MAX_OUTPUT", "2000")
    flood = 3_000_000
    model.script(reply(None, ipython(f"print('x' * {flood})\n1 / 0")), reply("done"))
    assert await rlm.run("flood then fail") == "done"
    (result,) = tool_results(model)
    assert result.startswith("xxx")
    assert result.endswith("ZeroDivisionError: division by zero"), result[-300:]
    assert one_note(result) > flood - 2000
    assert len(result) < 2100
