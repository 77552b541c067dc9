"""Parity: the kernel behaviours people rely on work the same with a sandbox on, through the
real ``rlm`` command. One run per case covers, in a few cells: a line magic, ``!cmd``,
``%%bash``, the bash tool (its ``setsid`` escapee gone after the run), an imported skill,
``rlm.llm``, two sub-agents (fork-started, or from the warm pool), a cell interrupted on its
timeout (state kept) and a kernel that died and was restarted. Writes outside the workspace
fail in every part while the run goes on.

The cases: ``workspace`` as root (pooled children) and as nobody (forked children), and
``strict`` as root (cold starts: bwrap cannot fork). The full kernel suites under a sandbox
run with ``RLM_TEST_SANDBOX=workspace|strict`` (see tests/conftest.py, docs/security.md)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from rlm.sandbox import bwrap
from rlm.sandbox.landlock import abi_version
from sandboxing import interpreter, python_path, run_rlm, tool_texts, users
from sandboxing import scratch as scratch  # the fixture
from scripted_model import ScriptedModel, call, ipython, reply
from test_skills_in_kernel import fake_install

SKILL = (
    "import rlm.skill\n\n"
    "async def run(text: str) -> str:\n"
    '    """Upper-case text.\n\n    Args:\n        text: What to shout.\n    """\n'
    "    return text.upper()\n\n"
    "rlm.skill.make_callable(__name__)\n"
)

CHILD = """
import errno, os
try:
    open('OUTSIDE/NAME.txt', 'w').close()
    outside = 'written'
except OSError as exc:
    outside = errno.errorcode.get(exc.errno, str(exc.errno))
open('inside-NAME.txt', 'w').close()
print('NAME', os.environ.get('RLM_SANDBOX'), outside)
"""


def _running(*argv: str) -> list[int]:
    """Live processes whose command line is exactly ``argv`` (a zombie's is empty)."""
    wanted = ("\0".join(argv) + "\0").encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes() == wanted:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _cases() -> list[tuple[str, str]]:
    """(sandbox, user) pairs this machine can run."""
    cases = []
    if abi_version() >= 1:
        cases += [("workspace", user) for user in users()]
    if bwrap.unusable() is None:
        cases.append(("strict", users()[0]))
    return cases or [pytest.param("workspace", "root", marks=pytest.mark.skip("no sandbox"))]


@pytest.mark.parametrize(("sandbox", "user"), _cases())
def test_kernel_behaviours_with_the_sandbox_on(
    model: ScriptedModel, scratch: Path, sandbox: str, user: str
) -> None:
    work, site = scratch / "work", scratch / "site"
    work.mkdir()
    fake_install(site, "shout", SKILL)
    outside = Path(tempfile.mkdtemp(prefix="rlm-outside-", dir="/var/tmp"))
    outside.chmod(0o777)  # anyone may write here: only the sandbox stops the writes
    if user == "nobody":
        for path in (scratch, work, site, *site.rglob("*")):
            os.chown(path, 65534, 65534)
    python = interpreter(user, scratch)
    pooled = sandbox == "workspace" and user == "root"
    escapee = str(7450 + os.getpid() % 500)  # a sleep no other test starts
    root_steps = [
        "x = 41\n%time y = x + 1\nprint('magic', y)",
        f"!echo bang-ok; echo x > {outside}/bang.txt || echo bang-denied",
        f"%%bash\necho cell-ok\necho x > {outside}/cell.txt || echo cell-denied",
        "print(await shout(text='skill-ok'))",
        "print(await rlm.llm('llm: parity'))",
        "print(await rlm.run('child: one'))",
        "print(await rlm.run('child: two'))",
    ]
    bash = (
        f"setsid sleep {escapee} >/dev/null 2>&1 & echo $! > escapee.pid; echo tool-ok; "
        f"echo x > {outside}/tool.txt || echo tool-denied"
    )
    model.script(
        *(reply(None, ipython(step)) for step in root_steps),
        reply(None, call("bash", {"command": bash})),
        reply(None, ipython("import time\ntime.sleep(120)", timeout=3)),
        reply(None, ipython("print('kept', x + 1)")),
        reply(None, ipython("import os\nos._exit(1)")),
        reply(None, ipython("print('restarted', 'x' in globals())")),
        reply("done"),
        match="root: parity",
    )
    model.script(reply("LLM-OK"), match="llm: parity")
    for name in ("one", "two"):
        cell = CHILD.replace("OUTSIDE", str(outside)).replace("NAME", name)
        model.script(reply(None, ipython(cell)), reply(f"{name} done"), match=f"child: {name}")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(scratch),
        "PYTHONPATH": os.pathsep.join([str(site), python_path()]),
        "RLM_BASE_URL": model.base_url,
        "RLM_API_KEY": "sk-parity-test",
        "RLM_MODEL": "scripted",
        "RLM_MAX_DEPTH": "1",
        "RLM_SANDBOX": sandbox,
        "RLM_TOOLS": "ipython,bash",
        "RLM_EXEC_TIMEOUT": "60",
        "RLM_SDK_MAX_RETRIES": "0",
        "RLM_KERNEL_POOL": "1" if pooled else "0",
    }
    try:
        stderr = run_rlm(user, python, "root: parity", cwd=work, env=env)
        assert f"rlm: sandbox {sandbox} (" in stderr, stderr
        texts = tool_texts(model, "root: parity")
        (magic, bang, cell, skill, llm, one, two, tool, slow, kept, died, restarted) = texts
        assert "magic 42" in magic and "Wall time" in magic, magic
        assert "bang-ok" in bang and "bang-denied" in bang, bang
        assert "cell-ok" in cell and "cell-denied" in cell, cell
        assert "SKILL-OK" in skill, skill
        assert "LLM-OK" in llm, llm
        assert "one done" in one and "two done" in two, (one, two)
        assert "tool-ok" in tool and "tool-denied" in tool, tool
        assert "interrupted" in slow, slow
        assert "kept 42" in kept, kept  # the interrupt kept the kernel and its variables
        assert "restart" in died, died
        assert "restarted False" in restarted, restarted
        for name in ("one", "two"):
            (child,) = [t for t in tool_texts(model, f"child: {name}") if t.startswith(name)]
            assert child.split()[:2] == [name, sandbox], child
            assert child.split()[2] != "written", child
        assert list(outside.iterdir()) == []
        names = {p.name for p in work.iterdir()}
        assert {"inside-one.txt", "inside-two.txt", "escapee.pid"} <= names, names
        # By command line: under strict the pid in escapee.pid is one of bwrap's namespace.
        assert not _running("sleep", escapee), "the bash tool's setsid escapee outlived the run"
    finally:
        shutil.rmtree(outside, ignore_errors=True)
