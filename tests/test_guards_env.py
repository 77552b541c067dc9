"""Every credential of the deny-list stays out of model-written code's environment.

One real ``rlm`` run (the CLI, a scripted model over HTTP) with every deny-listed variable
planted, each with a value of its own; the root kernel, a child's kernel (started the way
sub-agent kernels are, e.g. forked) and the bash tool each report what they see. The list
is spelled out here on purpose, not read from ``rlm.kernels.environment``: dropping a name
from the module must fail the test for that name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripted_model import ScriptedModel, call, ipython, reply

#: The documented deny-list (docs/security.md), one test per entry.
DENY_LIST = (
    "RLM_API_KEY",
    "OPENAI_API_KEY",
    "OPENAI_ORG_ID",
    "ANTHROPIC_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "OPENROUTER_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "GROQ_API_KEY",
    "TOGETHER_API_KEY",
    "DEEPSEEK_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
)
#: A variable no rule removes: proves each probe really reports the environment it got.
HARMLESS = "RLM_GUARDS_HARMLESS"


def planted(name: str) -> str:
    """A value unique to ``name`` (a valid API key too: RLM_API_KEY is the model's key)."""
    return f"planted-{name.lower()}-7f3a"


KERNEL_PROBE = r"""
import json, os
proc = open('/proc/self/environ', 'rb').read().decode('utf-8', 'replace').split('\0')
print(json.dumps({'environ': dict(os.environ), 'proc': [p for p in proc if p]}))
"""
BASH_PROBE = call("bash", {"command": "env; tr '\\0' '\\n' < /proc/self/environ"})
PROBES = (reply(None, ipython(KERNEL_PROBE)), reply(None, BASH_PROBE))


def _tool_results(requests: list[dict]) -> list[str]:
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, str]]]:
    """What each probe saw: ``{where: {"environ": ..., "text": ...}}``, ``where`` being the
    root kernel, the child kernel and the bash tool of each."""
    tmp = tmp_path_factory.mktemp("guards-env")
    with ScriptedModel() as model:
        spawn = reply(None, ipython("print(await rlm.run('child: probe'))"))
        model.script(*PROBES, spawn, reply("root looked"), match="root")
        model.script(*PROBES, reply("child looked"), match="child: probe")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
        env.pop("PYTEST_CURRENT_TEST", None)
        env.update({name: planted(name) for name in DENY_LIST})
        env.update(
            RLM_BASE_URL=model.base_url,
            RLM_MODEL="scripted",
            RLM_HOME=str(tmp / "home"),
            RLM_MAX_DEPTH="1",
            RLM_TOOLS="ipython,bash",
            RLM_EXEC_TIMEOUT="60",
            RLM_SDK_MAX_RETRIES="0",
            **{HARMLESS: "visible"},
        )
        done = subprocess.run(
            [sys.executable, "-m", "rlm", "-q", "root: probe the environment"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "root looked"
        assert not model.errors, model.errors
        out: dict[str, dict[str, str]] = {}
        for agent in ("root", "child: probe"):
            kernel, bash, *_ = _tool_results(model.requests_for(agent))
            report = json.loads(kernel)
            out[f"{agent} kernel"] = {"environ": report["environ"], "text": kernel}
            pairs = [line.split("=", 1) for line in bash.splitlines() if "=" in line]
            out[f"{agent} bash"] = {"environ": dict(pairs), "text": bash}
            out[f"{agent} kernel /proc"] = {
                "environ": dict(p.split("=", 1) for p in report["proc"] if "=" in p),
                "text": kernel,
            }
        yield out


def test_each_probe_sees_an_ordinary_variable(seen: dict[str, dict[str, str]]) -> None:
    assert len(seen) == 6
    for where, view in seen.items():
        assert view["environ"].get(HARMLESS) == "visible", where


@pytest.mark.parametrize("name", DENY_LIST)
def test_the_credential_reaches_no_kernel_and_no_bash_command(
    seen: dict[str, dict[str, str]], name: str
) -> None:
    for where, view in seen.items():
        assert name not in view["environ"], f"{name} reached the {where}"
        assert planted(name) not in view["text"], f"the value of {name} reached the {where}"


def test_the_documented_list_is_the_one_tested() -> None:
    """docs/security.md names each credential this module checks."""
    doc = (Path(__file__).parents[1] / "docs" / "security.md").read_text()
    for name in DENY_LIST:
        assert f"`{name}`" in doc, name
