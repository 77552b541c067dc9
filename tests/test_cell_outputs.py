"""A cell's structured outputs: kept in its tool message's log line (never sent to the model),
capped for the log, and turned back into real notebook outputs by ``rlm sessions export``.

Real runs (real kernels, the scripted model over HTTP), then the ``rlm sessions`` command
in-process, as in test_sessions_cli.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest

import rlm
from conftest import read_log, sessions
from rlm.agent.context import OPENAI_KEYS
from rlm.cli.main import main as cli_main
from rlm.kernels.output import MAX_LOGGED_OUTPUTS, RICH_LOG_LIMIT
from scripted_model import ScriptedModel, ipython, reply

#: A 1x1 PNG.
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
RICH_CELL = (
    "import base64\n"
    "from IPython.display import HTML, Image, display\n"
    "print('hello')\n"
    f"display(Image(data=base64.b64decode({PNG!r})))\n"
    "display(HTML('<b>bold</b>'))\n"
    "'val'"
)
ERROR_CELL = "print('before')\nraise ValueError('bad value')"


def export(home: Path, folder: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]) -> Any:
    """``rlm sessions export <id> --format ipynb``; the root agent's notebook."""
    argv = ["sessions", "export", folder.name, "--format", "ipynb", "-o", str(out_dir)]
    code = cli_main([*argv, "--home", str(home)])
    out, err = capsys.readouterr()
    assert code == 0, err
    (path,) = out.split()
    return nbformat.read(path, as_version=4)


def code_cells(notebook: Any) -> list[Any]:
    return [
        cell
        for cell in notebook.cells
        if cell.cell_type == "code" and cell.metadata.get("rlm", {}).get("kind") != "setup"
    ]


async def test_export_rebuilds_images_values_and_errors_from_the_log(
    model: ScriptedModel, rlm_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model.script(
        reply(None, ipython(RICH_CELL)),
        reply(None, ipython(ERROR_CELL)),
        reply("done"),
    )
    assert await rlm.run("show things") == "done"
    # the model never receives the structured outputs
    for request in model.requests:
        for message in request["messages"]:
            assert set(message) <= set(OPENAI_KEYS), message
    (folder,) = sessions(rlm_env)
    tool_lines = [line for line in read_log(folder) if line.get("role") == "tool"]
    assert [len(line["outputs"]) for line in tool_lines] == [4, 2]

    rich, error = code_cells(export(rlm_env, folder, tmp_path / "nb", capsys))
    stream, image, html, value = rich.outputs
    assert stream.output_type == "stream" and stream.text == "hello\n"
    assert image.output_type == "display_data" and image.data["image/png"].strip() == PNG
    assert html.output_type == "display_data" and html.data["text/html"] == "<b>bold</b>"
    assert value.output_type == "execute_result" and value.data["text/plain"] == "'val'"
    assert value.execution_count == rich.execution_count
    printed, raised = error.outputs
    assert printed.text == "before\n"
    assert raised.output_type == "error"
    assert (raised.ename, raised.evalue) == ("ValueError", "bad value")
    assert any("raise" in line and "bad value" in line for line in raised.traceback)  # ANSI

    # A log written before outputs were kept still exports, from the text the model read.
    log = folder / "messages.jsonl"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    for line in lines:
        line.pop("outputs", None)
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rich, error = code_cells(export(rlm_env, folder, tmp_path / "old", capsys))
    assert [o.output_type for o in rich.outputs] == ["stream"]
    assert "hello" in rich.outputs[0].text and "'val'" in rich.outputs[0].text
    printed, raised = error.outputs
    assert (raised.ename, raised.evalue) == ("ValueError", "bad value")


async def test_logged_outputs_are_capped(
    model: ScriptedModel,
    rlm_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Big images are left out of the log (with their size), a long stream is one output cut
    by the truncation policy, and a cell displaying in a loop stops being logged."""
    monkeypatch.setenv("RLM_MAX_OUTPUT", "2000")
    many = MAX_LOGGED_OUTPUTS + 20
    big = RICH_LOG_LIMIT + 1000
    model.script(
        reply(
            None, ipython(f"display({{'image/png': 'A' * {big}, 'text/plain': 'big'}}, raw=True)")
        ),
        reply(None, ipython("for i in range(5000):\n    print(i)")),
        reply(None, ipython(f"for i in range({many}):\n    display(i)")),
        reply("done"),
    )
    assert await rlm.run("flood the log") == "done"
    (folder,) = sessions(rlm_env)
    assert (folder / "messages.jsonl").stat().st_size < 100_000
    image, stream, loop = [
        line["outputs"] for line in read_log(folder) if line.get("role") == "tool"
    ]
    (shown,) = image
    assert shown["content"]["data"] == {"text/plain": "big"}
    assert shown["content"]["metadata"]["rlm_not_logged"] == {"image/png": big}
    (printed,) = stream
    text = printed["content"]["text"]
    assert text.startswith("0\n1\n") and text.endswith("4998\n4999\n")
    assert "[output truncated: " in text and len(text) < 2100
    assert len(loop) == MAX_LOGGED_OUTPUTS + 1
    assert loop[-1]["content"]["text"] == "[20 more output(s) of this cell not logged]\n"

    image_cell, stream_cell, loop_cell = code_cells(export(rlm_env, folder, tmp_path, capsys))
    assert image_cell.outputs[0].data == {"text/plain": "big"}
    assert stream_cell.outputs[0].text == text
    assert len(loop_cell.outputs) == MAX_LOGGED_OUTPUTS + 1
