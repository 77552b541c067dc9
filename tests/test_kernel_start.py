"""Kernel start modes: cold, forked from the zygote, and handed out by the warm pool.

Every mode passes the same kernel behaviours (magics, ``!cmd``, errors, interrupt, restart,
death, no orphans, env and cwd); forking falls back to cold starts when it is off or fails;
the pool hands out clean kernels. Timings live in ``bench/``, not here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import sessions
from rlm.config import load_settings
from rlm.kernels.environment import kernel_environment
from rlm.kernels.kernel import Kernel
from rlm.kernels.launcher import KernelLauncher
from rlm.runtime.orchestrator import Orchestrator
from rlm.zygote import fork_supported
from scripted_model import ipython, reply

pytestmark = pytest.mark.skipif(not fork_supported(), reason="fork start needs Linux")

MODES = ["cold", "fork", "pool"]
SETUP = "import rlm.inkernel\nrlm.inkernel.setup()\n"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgid) of ``pid``, None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1]), int(fields[2])


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its reaper counts as gone)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def assert_gone(pids: list[int], timeout: float = 10.0, note: str = "") -> None:
    """Each process ends within ``timeout`` (an orphan is reaped by init, asynchronously)."""
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.02)
    survivors = {p: _stat(p) for p in pids if alive(p)}
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"still running (state, ppid, pgid): {survivors} {note}"


def agent_env(**extra: str) -> dict[str, str]:
    """An environment like the orchestrator builds: no credentials, control variables."""
    return {
        **kernel_environment(),
        "RLM_CONTROL_ADDR": "ipc:///nowhere",
        "RLM_AGENT_ID": "agent-1",
        "RLM_AGENT_SECRET": "s3cret",
        **extra,
    }


@pytest.fixture
async def launcher(request, tmp_path: Path, monkeypatch) -> AsyncIterator[KernelLauncher]:
    """A launcher in the mode ``request.param`` with its zygote ready (fork and pool)."""
    monkeypatch.setenv("RLM_API_KEY", "sk-test-secret-key")
    mode = request.param
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    launcher = KernelLauncher(
        run_dir,
        cwd=tmp_path,
        env=kernel_environment(),
        mode="cold" if mode == "cold" else "fork",
        pool_size=2 if mode == "pool" else 0,
        preload=[],
    )
    launcher.mode_name = mode  # type: ignore[attr-defined]
    if mode != "cold":
        await launcher.start_zygote()
        assert launcher.zygote is not None
        await launcher.zygote.ready()
    try:
        yield launcher
    finally:
        await launcher.close()


async def start(launcher: KernelLauncher, cwd: Path, **env: str) -> Kernel:
    """A kernel the way the mode hands it out; a pool kernel is a sub-agent's (depth 1)."""
    mode = launcher.mode_name  # type: ignore[attr-defined]
    handed_out = launcher.pool.handed_out if launcher.pool else 0
    kernel = await launcher.start_kernel(
        "k", env=agent_env(**env), bootstrap=SETUP, depth=1 if mode == "pool" else 0, cwd=cwd
    )
    started_by = getattr(kernel._km.provisioner, "started_by", "cold")
    if mode == "pool":
        assert launcher.pool is not None and launcher.pool.handed_out == handed_out + 1
    assert started_by == ("cold" if mode == "cold" else "fork")
    return kernel


@pytest.mark.parametrize("launcher", MODES, indirect=True)
async def test_magics_shell_and_errors(launcher, tmp_path):
    kernel = await start(launcher, tmp_path)
    try:
        bash = await kernel.execute("%%bash\necho one\necho two", 30)
        assert (bash.status, bash.output) == ("ok", "one\ntwo\n")
        shell = await kernel.execute("!echo hello from shell", 30)
        assert shell.output.strip() == "hello from shell"
        error = await kernel.execute("def f():\n    return 1 / 0\nf()", 30)
        assert error.status == "error" and "ZeroDivisionError" in error.output
        value = await kernel.execute("6 * 7", 30)
        assert value.output.strip() == "42"
    finally:
        await kernel.shutdown()


@pytest.mark.parametrize("launcher", MODES, indirect=True)
async def test_env_and_cwd_are_the_agents(launcher, tmp_path):
    cwd = tmp_path / "agent-cwd"  # not the launcher's cwd: the pool must move there
    cwd.mkdir()
    kernel = await start(launcher, cwd, RLM_TEST_MARK="marked")
    code = (
        "import os, sys, json, rlm.inkernel as k\n"
        "print(json.dumps([os.getcwd(), os.environ.get('RLM_TEST_MARK'), "
        "sorted(n for n in os.environ if n in ('RLM_API_KEY', 'RLM_AGENT_SECRET', "
        "'RLM_AGENT_ID', 'RLM_CONTROL_ADDR')), k._state.get('agent_id'), "
        "os.getpgid(0) == os.getpid(), '' in sys.path]))"
    )
    try:
        result = await kernel.execute(code, 30)
        assert result.status == "ok", result.output
        got_cwd, mark, leaked, agent_id, own_group, cwd_on_path = json.loads(result.output)
        assert got_cwd == str(cwd) and mark == "marked"
        assert leaked == []  # no credentials; control variables popped by setup()
        assert agent_id == "agent-1"
        assert own_group and cwd_on_path
        shell = await kernel.execute("!pwd; echo ${RLM_API_KEY:-none}", 30)
        assert shell.output.split() == [str(cwd), "none"]
    finally:
        await kernel.shutdown()


@pytest.mark.parametrize("launcher", MODES, indirect=True)
async def test_timeout_interrupts_and_keeps_state(launcher, tmp_path):
    kernel = await start(launcher, tmp_path)
    try:
        await kernel.execute("x = 'kept'", 30)
        looped = await kernel.execute("import time\nwhile True: time.sleep(0.01)", 1)
        assert looped.status == "timeout" and "state kept" in looped.text
        after = await kernel.execute("print(x)", 30)
        assert after.output.strip() == "kept"
    finally:
        await kernel.shutdown()


@pytest.mark.parametrize("launcher", MODES, indirect=True)
async def test_restart_after_an_ignored_interrupt(launcher, tmp_path):
    cwd = tmp_path / "restart-cwd"
    cwd.mkdir()
    kernel = await start(launcher, cwd, RLM_TEST_MARK="again")
    kernel.interrupt_grace = 0.5
    first_pid = kernel.pid
    code = (
        "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ny = 1\ntime.sleep(300)"
    )
    try:
        stuck = await kernel.execute(code, 1)
        assert stuck.status == "restarted" and "variables and imports are lost" in stuck.text
        assert kernel.pid != first_pid
        assert not alive(first_pid)
        check = "import os\nprint('y' in globals(), os.getcwd(), os.environ.get('RLM_TEST_MARK'))"
        after = await kernel.execute(check, 30)
        assert after.output.split() == ["False", str(cwd), "again"]  # bootstrap ran again
    finally:
        await kernel.shutdown()


@pytest.mark.parametrize("launcher", MODES, indirect=True)
async def test_death_is_detected_with_its_exit_code(launcher, tmp_path):
    kernel = await start(launcher, tmp_path)
    try:
        died = await kernel.execute("import os; os._exit(3)", 30)
        assert died.status == "died" and "exit code 3" in died.text
        after = await kernel.execute("print(1 + 1)", 30)
        assert after.output.strip() == "2"
    finally:
        await kernel.shutdown()


@pytest.mark.parametrize("launcher", MODES, indirect=True)
async def test_no_orphans_after_shutdown(launcher, tmp_path):
    kernel = await start(launcher, tmp_path)
    code = "import subprocess\np = subprocess.Popen(['sleep', '300'])\nprint(p.pid)"
    result = await kernel.execute(code, 30)
    sleeper, pid = int(result.output), kernel.pid
    assert pid is not None and alive(sleeper) and alive(pid)
    await kernel.shutdown()
    assert not alive(pid)  # reaped before shutdown returned
    assert_gone([sleeper])  # its process group was killed with it


@pytest.mark.parametrize("launcher", ["pool"], indirect=True)
async def test_pool_hands_out_clean_kernels_and_refills(launcher, tmp_path):
    pool = launcher.pool
    first = await start(launcher, tmp_path)
    await first.execute("leftover = 'from the first agent'", 30)
    await first.shutdown()
    second = await start(launcher, tmp_path)
    try:
        result = await second.execute("print('leftover' in globals())", 30)
        assert result.output.strip() == "False"
        assert second.pid != first.pid and pool.handed_out == 2
        assert len(pool._starts) == pool.size  # refilling in the background
    finally:
        await second.shutdown()


@pytest.mark.parametrize("launcher", ["fork"], indirect=True)
async def test_forked_kernels_are_reseeded_and_watch_their_real_parent(launcher, tmp_path):
    code = (
        "import os, random\n"
        "from ipykernel.kernelapp import IPKernelApp\n"
        "app = IPKernelApp.instance()\n"
        "print(random.random(), os.getppid(), os.environ['JPY_PARENT_PID'], app.parent_handle,"
        " app.poller is not None and app.poller.is_alive())"
    )
    outputs = []
    for _ in range(2):
        kernel = await start(launcher, tmp_path)
        outputs.append((await kernel.execute(code, 30)).output.split())
        await kernel.shutdown()
    zygote = str(launcher.zygote.info["pid"])
    assert outputs[0][0] != outputs[1][0]  # not the zygote's random state twice
    for _, ppid, env_parent, handle, polling in outputs:
        assert ppid == env_parent == handle == zygote and polling == "True"


@pytest.mark.parametrize("launcher", ["fork"], indirect=True)
async def test_forked_kernel_runs_the_app_the_zygote_parsed(launcher, tmp_path):
    """The command line was parsed once in the zygote (rlm.zygote.prepared); each forked
    kernel still serves its own connection file with the kernelspec's flags applied."""
    code = (
        "from ipykernel.kernelapp import IPKernelApp\n"
        "app = IPKernelApp.instance()\n"
        "print(app.connection_file, app.quiet, get_ipython().history_manager.enabled,"
        " app.parse_command_line.__name__)"
    )
    for _ in range(2):  # the zygote's app serves every fork
        kernel = await start(launcher, tmp_path)
        try:
            output = (await kernel.execute(code, 30)).output.split()
            assert output == [kernel._km.connection_file, "True", "False", "_skip_parse"]
        finally:
            await kernel.shutdown()


def test_other_kernel_flags_are_parsed_in_the_child():
    """A kernelspec with other flags than rlm's gets a fresh app that parses them."""
    code = textwrap.dedent(
        """
        from rlm.zygote.prepared import KERNEL_FLAGS, kernel_app, prepare
        prepare()
        app, argv = kernel_app(["-f", "a.json", *KERNEL_FLAGS])
        assert argv == [] and app.connection_file == "a.json" and app.quiet, argv
        other = ["-f", "b.json", "--IPKernelApp.quiet=False"]
        fresh, argv = kernel_app(other)
        assert fresh is not app and argv == other, argv
        fresh.parse_command_line(argv)
        assert fresh.connection_file == "b.json" and not fresh.quiet
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


@pytest.mark.parametrize("launcher", ["fork"], indirect=True)
async def test_forked_kernels_have_no_debugger(launcher, tmp_path):
    """The zygote imports ipykernel without debugpy: no Debugger per child and no module list
    for it (rlm.zygote.kernel.ForkedKernel); a cell may still import debugpy itself."""
    kernel = await start(launcher, tmp_path)
    try:
        assert "debugger" not in kernel.kernel_info.get("supported_features", [])
        code = (
            "import sys\n"
            "from ipykernel.ipkernel import IPythonKernel\n"
            "kernel = get_ipython().kernel\n"
            "print(hasattr(kernel, 'debugger'), 'debugpy' in sys.modules, type(kernel).__name__,"
            " len(kernel._kernel_modules), IPythonKernel.instance() is kernel,"
            " sys.modules['ipykernel.ipkernel'].sys is sys)\n"
            "import debugpy\n"
            "print(debugpy.__name__)"
        )
        assert (await kernel.execute(code, 30)).output.split() == [
            "False", "False", "ForkedKernel", "0", "True", "True", "debugpy"
        ]  # fmt: skip
    finally:
        await kernel.shutdown()


@pytest.mark.parametrize("launcher", ["pool"], indirect=True)
async def test_a_pooled_kernel_that_died_is_replaced(launcher, tmp_path):
    pool = launcher.pool
    pool.activate()
    waiting = await asyncio.gather(*pool._starts)
    for kernel in waiting:  # both pooled kernels die while nobody uses them
        os.kill(kernel.pid, signal.SIGKILL)
        await kernel._km.provisioner.process.wait_async()
    kernel = await launcher.start_kernel("k", env=agent_env(), bootstrap=SETUP, depth=1)
    try:
        assert kernel.pid not in {k.pid for k in waiting}
        assert (await kernel.execute("print('fresh')", 30)).output.strip() == "fresh"
    finally:
        await kernel.shutdown()


# -- fallback to cold ------------------------------------------------------------------------


async def test_cold_mode_never_starts_a_zygote(tmp_path):
    launcher = KernelLauncher(tmp_path, cwd=tmp_path, env=kernel_environment(), mode="cold")
    kernel = await launcher.start_kernel("k", env=agent_env(), bootstrap=SETUP, depth=1)
    try:
        assert launcher.zygote is None and kernel.spec_name == "rlm"
        assert type(kernel._km.provisioner).__name__ == "LocalProvisioner"
        assert (await kernel.execute("print(3)", 30)).output.strip() == "3"
    finally:
        await kernel.shutdown()
        await launcher.close()


async def test_broken_preload_falls_back_to_cold_and_says_why(tmp_path, caplog):
    modules = tmp_path / "mods"
    modules.mkdir()
    (modules / "rlm_test_broken.py").write_text("raise RuntimeError('preload exploded')\n")
    env = {**kernel_environment(), "PYTHONPATH": str(modules)}
    launcher = KernelLauncher(
        tmp_path, cwd=tmp_path, env=env, mode="fork", preload=["rlm_test_broken"]
    )
    caplog.set_level(logging.WARNING, logger="rlm.zygote")
    try:
        kernels = [
            await launcher.start_kernel(f"k{i}", env=agent_env(), bootstrap=SETUP, depth=1)
            for i in range(2)
        ]
        for kernel in kernels:
            assert getattr(kernel._km.provisioner, "started_by", "cold") == "cold"
            assert (await kernel.execute("print('ok')", 30)).output.strip() == "ok"
            await kernel.shutdown()
        assert not launcher.forking
        warnings = [r.getMessage() for r in caplog.records if r.name == "rlm.zygote"]
        assert len(warnings) == 1  # logged once, not per kernel
        assert "starting kernels cold" in warnings[0] and "preload exploded" in warnings[0]
    finally:
        await launcher.close()


async def test_killed_zygote_falls_back_to_cold(tmp_path, caplog):
    launcher = KernelLauncher(tmp_path, cwd=tmp_path, env=kernel_environment(), mode="fork")
    caplog.set_level(logging.WARNING, logger="rlm.zygote")
    try:
        forked = await launcher.start_kernel("k1", env=agent_env(), bootstrap=SETUP, depth=1)
        assert forked._km.provisioner.started_by == "fork"
        zygote_pid = launcher.zygote.info["pid"]
        os.kill(zygote_pid, signal.SIGKILL)
        # its kernel dies with it (parent-death signal); the death is detected, and the
        # restart cannot fork any more, so it starts cold
        died = await forked.execute("import time; time.sleep(60)", 60)
        assert died.status == "died"
        assert forked._km.provisioner.started_by == "cold"
        assert (await forked.execute("print('back')", 30)).output.strip() == "back"
        await forked.shutdown()
        cold = await launcher.start_kernel("k2", env=agent_env(), bootstrap=SETUP, depth=1)
        assert cold.spec_name == "rlm" and not launcher.forking
        await cold.shutdown()
        warnings = [r.getMessage() for r in caplog.records if r.name == "rlm.zygote"]
        assert len(warnings) == 1 and "starting kernels cold" in warnings[0]
    finally:
        await launcher.close()


# -- lifetime --------------------------------------------------------------------------------

_ORPHAN_SCRIPT = """
import asyncio, json, os, sys, time
from pathlib import Path
from rlm.kernels.launcher import KernelLauncher

async def main():
    run = Path(sys.argv[1])
    launcher = KernelLauncher(run, cwd=run, env=dict(os.environ), mode="fork")
    kernel = await launcher.start_kernel("k", env=dict(os.environ), bootstrap="", depth=1)
    result = await kernel.execute(
        "import subprocess; print(subprocess.Popen(['sleep', '300']).pid)", 30
    )
    started_by = kernel._km.provisioner.started_by
    pids = [launcher.zygote.info["pid"], kernel.pid, int(result.output)]
    print(json.dumps([started_by, pids]), flush=True)
    await asyncio.sleep(300)

asyncio.run(main())
"""


def test_orchestrator_death_takes_zygote_and_kernels_along(tmp_path):
    """SIGKILL to the orchestrator: nothing can clean up, parent-death signals do."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(_ORPHAN_SCRIPT), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line, "the helper orchestrator did not report its processes"
        started_by, pids = json.loads(line)
        assert started_by == "fork" and all(alive(p) for p in pids)
        groups = {pid: _stat(pid)[2] for pid in pids}  # (state, ppid, pgid)
    finally:
        proc.kill()
        proc.wait()
    log = (tmp_path / "zygote.log").read_text(errors="replace")[-2000:]
    assert_gone(pids, note=f"groups before: {groups}; zygote log: {log}")


# -- end to end ------------------------------------------------------------------------------


async def test_child_agent_runs_in_a_forked_kernel(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_KERNEL_POOL", "0")
    model.script(
        reply(None, ipython("print(await rlm.run('child: who is your parent?'))")),
        reply("parent done"),
        match="root",
    )
    code = "import os\nprint(os.getppid(), os.getcwd(), 'RLM_API_KEY' in os.environ)"
    model.script(reply(None, ipython(code)), reply("child done"), match="child:")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root task") == "parent done"
        zygote = orchestrator.launcher.zygote
        assert zygote is not None and zygote.info and not zygote.disabled
    (child_result,) = [
        m["content"] for m in model.requests_for("child:")[-1]["messages"] if m["role"] == "tool"
    ]
    assert child_result.split() == [str(zygote.info["pid"]), str(Path.cwd()), "False"]
    assert len(sessions(rlm_env)) == 1


async def test_pooled_children_do_not_see_each_other(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_KERNEL_POOL", "1")
    cell = "a = await rlm.run('child: one')\nb = await rlm.run('child: two')\nprint(a, b)"
    model.script(reply(None, ipython(cell)), reply("parent done"), match="root")
    model.script(reply(None, ipython("secret_var = 42")), reply("one set it"), match="child: one")
    probe = "import os\nprint('secret_var' in globals(), os.getcwd())"
    model.script(reply(None, ipython(probe)), reply("two looked"), match="child: two")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root task") == "parent done"
        pool = orchestrator.launcher.pool
        assert pool is not None and pool.handed_out == 2
    (probe_result,) = [
        m["content"]
        for m in model.requests_for("child: two")[-1]["messages"]
        if m["role"] == "tool"
    ]
    assert probe_result.split() == ["False", str(Path.cwd())]


async def test_kernel_start_cold_setting_is_honoured(model, rlm_env, monkeypatch):
    monkeypatch.setenv("RLM_MAX_DEPTH", "1")
    monkeypatch.setenv("RLM_KERNEL_START", "cold")
    model.script(
        reply(None, ipython("print(await rlm.run('child: hi'))")), reply("ok"), match="root"
    )
    model.script(reply("hi"), match="child:")
    async with Orchestrator(load_settings()) as orchestrator:
        assert await orchestrator.run("root task") == "ok"
        assert orchestrator.launcher.zygote is None


@pytest.mark.parametrize("launcher", ["fork"], indirect=True)
async def test_a_burst_of_kernel_starts_is_queued_beyond_the_launchers_limit(launcher, tmp_path):
    """A start beyond ``max_starting`` waits for a slot instead of competing with the others
    (so each start's timeout counts its own start): with one slot, two kernels started at
    once run their (slow) bootstraps one after the other, never interleaved."""
    launcher.max_starting = 1
    marks = tmp_path / "marks"

    def bootstrap(name: str) -> str:
        return (
            f"import time\nopen({str(marks)!r}, 'a').write('begin {name}\\n')\n"
            f"time.sleep(0.5)\nopen({str(marks)!r}, 'a').write('end {name}\\n')\n"
        )

    kernels = await asyncio.gather(
        *(
            launcher.start_kernel(n, env=agent_env(), bootstrap=bootstrap(n), cwd=tmp_path)
            for n in ("a", "b")
        )
    )
    try:
        lines = marks.read_text().splitlines()
        assert sorted(lines) == ["begin a", "begin b", "end a", "end b"], lines
        assert lines[1] == lines[0].replace("begin", "end"), lines  # the first ended first
    finally:
        await asyncio.gather(*(k.shutdown() for k in kernels))
