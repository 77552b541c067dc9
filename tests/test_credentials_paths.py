"""The model credentials (the API key, a base URL with a password) stay in the orchestrator
on every path a cell has to the model: ``rlm.llm``, host functions, ``rlm.spawn`` and
``rlm.run``. No kernel of the tree has them in its environment (``os.environ`` and the
process's own ``/proc/self/environ``), and no file of the session holds them.

Both ways of giving them are covered: ``RLM_API_KEY`` / ``RLM_BASE_URL`` and the
``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` fallbacks an RL harness sets. Real kernels, the real
control channel and the scripted model (which ignores the credentials it is sent).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import rlm
from conftest import read_log, sessions
from scripted_model import ScriptedModel, ipython, reply

KEY = "sk-cred-paths-key-0042"
PASSWORD = "pw-cred-paths-0042"

#: Says which credentials a kernel sees, without writing them in the cell (its code is
#: logged): each secret is built from two halves.
PROBE = """
import os
secrets = ['sk-cred-paths-' + 'key-0042', 'pw-cred-paths-' + '0042']
names = {'RLM_API_KEY', 'RLM_BASE_URL', 'OPENAI_API_KEY', 'OPENAI_BASE_URL'}
raw = open('/proc/self/environ', 'rb').read().decode(errors='replace')
leaked = sorted({k for k in os.environ if k in names}
                | {s[:6] for s in secrets if s in raw or any(s in v for v in os.environ.values())})
print('leaked', leaked)
"""
ROOT_CELL = (
    PROBE
    + """
print('llm', await rlm.llm('chunk: a'))
print('fn', await where('root'))
child = await rlm.spawn()
print('spawned', await child.send('spawned: look'))
print('run', await rlm.run('child: look'))
"""
)
CHILD_CELL = PROBE + "print('llm', await rlm.llm('chunk: b'))\nprint('fn', await where('deep'))"


def where(label: str) -> str:
    """Called from a cell; runs in the orchestrator, which holds the credentials."""
    return f"host saw {label}"


def tool_outputs(folder: Path) -> list[str]:
    return [line["content"] for line in read_log(folder) if line.get("role") == "tool"]


@pytest.mark.parametrize("source", ["RLM", "OPENAI"])
async def test_no_kernel_and_no_log_file_holds_the_credentials(
    source: str, model: ScriptedModel, rlm_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RLM_API_KEY", "RLM_BASE_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    # a URL with a password, as a proxy with basic auth has
    url = model.base_url.replace("http://", f"http://harness:{PASSWORD}@")
    monkeypatch.setenv(f"{source}_API_KEY", KEY)
    monkeypatch.setenv(f"{source}_BASE_URL", url)
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    model.script(reply(None, ipython(ROOT_CELL)), reply("root done"), match="root task")
    for match in ("spawned: look", "child: look"):
        model.script(reply(None, ipython(CHILD_CELL)), reply(f"{match} done"), match=match)
    model.script(*[reply("chunk answer")] * 3, match="chunk:")

    assert await rlm.run("root task", functions=[where]) == "root done"

    # the endpoint got the key from the orchestrator on every request
    assert len(model.requests) == 2 + 2 + 2 + 3
    (root,) = sessions(rlm_env)
    children = sorted(root.glob("sub-*"))
    assert len(children) == 2  # the spawned child and the rlm.run child
    for folder in [root, *children]:
        (output,) = tool_outputs(folder)
        assert output.startswith("leaked []\nllm chunk answer\nfn host saw "), output
    (root_output,) = tool_outputs(root)
    assert "spawned spawned: look done" in root_output and "run child: look done" in root_output
    files = [p for p in root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"llm_calls.jsonl", "function_calls.jsonl", "messages.jsonl", "meta.json"} <= names
    for path in files:
        data = path.read_bytes()
        for secret in (KEY, PASSWORD, url):
            assert secret.encode() not in data, f"{secret!r} in {path}"
