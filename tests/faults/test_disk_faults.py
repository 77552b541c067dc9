"""Files and disks: planted FIFOs and device links, huge files, a full disk, a read-only
RLM_HOME, two writers of one session, export targets that exist or cannot be written.

rlm never blocks on a file it did not create, never reads one without end, and every
problem is one line for the user: exit 2 for what the user can fix before the run, exit 1
for a run that could not finish, never a traceback, and the session logs stay valid.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import check_logs, finish, read_jsonl, rlm_process, tool_results, wait_until

from conftest import read_meta, sessions
from helpers import run_cli
from rlm.logs.store import read_log
from rlm.schema.meta import AgentMeta, MetaError
from scripted_model import call, ipython, reply

#: The edit tool's documented size limit (rlm.agent.tools.edit.MAX_EDIT_BYTES).
EDIT_LIMIT = 10 * 1024 * 1024

#: Seconds within which a command that must not block has to exit (it hangs without end
#: when it opens a FIFO; a run of the real command takes about one second).
NO_HANG = 60


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    return {**env, **extra}


def _run(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    """``python -m rlm ARGS`` that must end by itself within ``NO_HANG`` seconds."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "rlm", *args],
            capture_output=True,
            text=True,
            errors="replace",
            env=_env(**(env or {})),
            timeout=NO_HANG,
            **kwargs,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"rlm {' '.join(args)} hung (no exit in {NO_HANG} s)") from None


def _assert_one_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _done_session(model, home: Path, answer: str = "first answer") -> Path:
    """A finished session (one model reply, no tools), as ``rlm`` leaves it."""
    model.script(reply(answer))
    result = run_cli("-q", "a task", env={"RLM_TOOLS": ""})
    assert result.returncode == 0, result.stderr
    return sessions(home)[-1]


# -- planted files in the session logs ------------------------------------------------------


def _plant(path: Path, kind: str) -> Path | None:
    """Replace ``path`` by a FIFO or a symlink; returns the link's regular target file."""
    original = path.read_bytes()
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero-link":  # reading it whole never ends (or exhausts memory)
        path.symlink_to("/dev/zero")
    else:  # appending through it would write into a file outside the logs (~/.bashrc ...)
        target = path.parent.parent.parent / f"outside-{path.name}"
        target.write_bytes(original)
        path.symlink_to(target)
        return target
    return None


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link", "file-link"])
@pytest.mark.parametrize("file", ["meta.json", "messages.jsonl"])
def test_session_readers_never_block_on_planted_files(model, rlm_env, tmp_path, file, kind):
    folder = _done_session(model, rlm_env)
    target = _plant(folder / file, kind)
    before = target.read_bytes() if target else b""
    sid = folder.name
    out = tmp_path / "out"
    commands = [
        ["sessions", "list"],
        ["sessions", "tree", sid],
        ["sessions", "show", sid],
        ["sessions", "export", sid, "--format", "jsonl"],
        ["sessions", "export", sid, "--format", "ipynb", "-o", str(out)],
    ]
    for args in commands:
        result = _run(*args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert sid in result.stdout + result.stderr or args[1] == "export", (args, result)
    raw = _run("sessions", "show", sid, "--raw")
    if file == "messages.jsonl":  # the raw lines cannot be shown: say why, in one line
        assert "not a regular file" in _assert_one_line(raw, 1), raw.stderr
    else:
        assert raw.returncode == 0 and "first answer" in raw.stdout, raw.stderr
    # Resuming would write to the planted file: refused, one line, exit 2.
    resumed = _run("--resume", sid, "-q", "go on", env={"RLM_TOOLS": ""})
    _assert_one_line(resumed, 2, "not a regular file")
    assert len(model.requests) == 1  # only the first run's
    if target is not None:
        assert target.read_bytes() == before  # nothing written through the link


def test_a_readable_log_and_the_note_of_an_unreadable_one(model, rlm_env):
    folder = _done_session(model, rlm_env)
    _plant(folder / "messages.jsonl", "fifo")
    result = _run("sessions", "show", folder.name)
    assert result.returncode == 0, result.stderr
    assert "cannot read" in result.stdout and "a FIFO, not a regular file" in result.stdout


def test_log_reads_stop_at_the_size_limit(tmp_path):
    log = tmp_path / "messages.jsonl"
    log.write_text(json.dumps({"role": "user", "content": "x" * 2000}) + "\n")
    assert read_log(log, limit=4096).records  # under the limit: read
    read = read_log(log, limit=1024)
    assert read.records == [] and "larger than the limit of 1 KiB" in (read.error or "")
    meta = tmp_path / "meta.json"
    with meta.open("wb") as handle:  # sparse: 64 MiB that take no disk space
        handle.truncate(64 << 20)
    with pytest.raises(MetaError, match="larger than the limit of 16 MiB"):
        AgentMeta.read(meta)


# -- --input files ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["dev-zero", "fifo", "folder"])
def test_input_that_is_not_a_regular_file_is_refused(model, rlm_env, tmp_path, kind):
    path = {"dev-zero": Path("/dev/zero"), "fifo": tmp_path / "pipe", "folder": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    result = _run("--input", f"z={path}", "-q", "a task")
    _assert_one_line(result, 2, "rlm: --input:", "not a regular file")
    assert model.requests == [] and sessions(rlm_env) == []


def test_context_file_that_is_not_a_regular_file_is_refused(model, rlm_env, tmp_path):
    os.mkfifo(tmp_path / "pipe")
    for path in ("/dev/zero", str(tmp_path / "pipe")):
        result = _run("--context", path, "-q", "a task")
        _assert_one_line(result, 2, "rlm: --context:", "not a regular file")
    assert model.requests == [] and sessions(rlm_env) == []


def test_input_over_the_size_limit_is_refused(model, rlm_env, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("x" * 2048)
    result = _run("--input", f"z={big}", "-q", "a task", env={"RLM_MAX_INPUT_BYTES": "1024"})
    _assert_one_line(result, 2, "larger than the limit of 1 KiB", "RLM_MAX_INPUT_BYTES")
    assert model.requests == [] and sessions(rlm_env) == []
    model.script(reply("2048"))  # at the limit it is read
    result = _run("--input", f"z={big}", "-q", "a task", env={"RLM_MAX_INPUT_BYTES": "2048"})
    assert result.returncode == 0 and result.stdout == "2048\n", result.stderr


# -- the edit tool ---------------------------------------------------------------------------


def test_edit_refuses_a_fifo_without_blocking(model, rlm_env):
    os.mkfifo("pipe")
    Path("link").symlink_to("/dev/zero")
    model.script(
        reply(None, call("edit", {"path": "pipe", "old_str": "a", "new_str": "b"})),
        reply(None, call("edit", {"path": "link", "old_str": "a", "new_str": "b"})),
        reply("refused"),
    )
    result = _run("-q", "edit the pipe", env={"RLM_TOOLS": "edit"})  # blocked for good before
    assert result.returncode == 0 and result.stdout == "refused\n", result.stderr
    fifo, device = tool_results(model.requests)
    assert "cannot edit pipe: a FIFO, not a regular file" in fifo
    assert "cannot edit link: a device, not a regular file" in device
    check_logs(rlm_env)


def test_edit_refuses_a_file_over_the_size_limit(model, rlm_env):
    big = Path("big.txt")
    with big.open("w") as handle:  # text all the way, so only the size can refuse it
        handle.write("needle\n" + "y" * EDIT_LIMIT)
    model.script(
        reply(None, call("edit", {"path": "big.txt", "old_str": "needle", "new_str": "pin"})),
        reply("too big"),
    )
    result = _run("-q", "edit the big file", env={"RLM_TOOLS": "edit"})
    assert result.returncode == 0 and result.stdout == "too big\n", result.stderr
    (message,) = tool_results(model.requests)
    assert "cannot edit big.txt: larger than the limit of 10 MiB" in message
    assert big.read_text().startswith("needle\n")  # untouched
    check_logs(rlm_env)


# -- a full disk -----------------------------------------------------------------------------


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death, as ENOSPC
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_log_write_failure_ends_the_run_cleanly(model, rlm_env):
    """A file size limit makes the log's writes fail the way a full disk does (EFBIG as
    ENOSPC): one line, exit 1, the log cut at its last complete line, a final meta.json."""
    cell = "print('z' * 30_000)"
    model.script(*[reply(None, ipython(cell)) for _ in range(12)], reply("never"))
    result = subprocess.run(
        [sys.executable, "-m", "rlm", "-q", "print a lot"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=NO_HANG,
        preexec_fn=_file_size_limit(100_000),
    )
    line = _assert_one_line(result, 1, "cannot write the session log", "messages.jsonl")
    assert "File too large" in line
    assert result.stdout == ""
    (folder,) = sessions(rlm_env)
    records = read_jsonl(folder / "messages.jsonl")  # every line whole, the last terminated
    assert records and (folder / "messages.jsonl").stat().st_size <= 100_000
    meta = read_meta(folder)
    assert meta["status"] == "error" and "cannot write the session log" in meta["error"]
    assert meta["ended_at"]
    assert not list(folder.glob(".meta-*"))
    check_logs(rlm_env)


def test_meta_write_failure_leaves_no_temp_file(tmp_path):
    """A final meta.json that cannot be written (here: over the file size limit) leaves
    the previous one in place, no temp file, and says so in one exception."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from rlm.errors import LogWriteError\n"
        "from rlm.logs.writer import SessionLog\n"
        "log = SessionLog(Path(sys.argv[1]), {'id': 's', 'task': 't'})\n"
        "log.append({'role': 'user', 'content': 't'})\n"
        "try:\n"
        "    log.close(status='done', answer='a' * 50_000)\n"
        "except LogWriteError as exc:\n"
        "    print(exc.message)\n"
    )
    folder = tmp_path / "s"
    result = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        capture_output=True,
        text=True,
        timeout=NO_HANG,
        preexec_fn=_file_size_limit(20_000),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"cannot write the session log {folder / 'meta.json'}: ")
    assert read_meta(folder)["status"] == "running"  # the last complete meta.json
    assert sorted(p.name for p in folder.iterdir()) == ["messages.jsonl", "meta.json"]
    assert read_jsonl(folder / "messages.jsonl")


def _readonly_home(tmp_path: Path) -> Path:
    """An RLM_HOME whose sessions/ exists but cannot be written to (a read-only mount for
    root, whom file modes do not stop; the mode for anyone else)."""
    home = tmp_path / "ro-home"
    home.mkdir()
    if os.geteuid() != 0:
        (home / "sessions").mkdir()
        home.joinpath("sessions").chmod(0o555)
        return home
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(home)]).returncode:
        pytest.skip("cannot mount a tmpfs (needs root with CAP_SYS_ADMIN)")
    (home / "sessions").mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
    return home


def test_read_only_rlm_home_is_a_usage_error(model, rlm_env, tmp_path):
    home = _readonly_home(tmp_path)
    try:
        result = run_cli("-q", "a task", env={"RLM_TOOLS": "", "RLM_HOME": str(home)})
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(home)], check=True)
        else:
            home.joinpath("sessions").chmod(0o755)
    _assert_one_line(result, 2, "rlm: RLM_HOME: cannot write to")
    assert model.requests == []


# -- two writers of one session -------------------------------------------------------------


def test_second_resume_of_a_running_session_is_refused(model, rlm_env, tmp_path):
    folder = _done_session(model, rlm_env)
    started, release = tmp_path / "started", tmp_path / "release"
    hold = (
        "import os, time\n"
        f"open({str(started)!r}, 'w').close()\n"
        f"while not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.05)\n"
        "print('released')"
    )
    model.script(reply(None, ipython(hold)), reply("second answer"))
    first = rlm_process("--resume", folder.name, "-q", "hold on")
    try:
        assert wait_until(started.exists, NO_HANG), "the first resume never ran its cell"
        second = _run("--resume", folder.name, "-q", "me too", env={"RLM_TOOLS": ""})
    finally:
        release.touch()
    out, err = finish(first)
    line = _assert_one_line(second, 2, f"session {folder.name} is in use by another rlm")
    assert f"pid {first.pid}" in line
    assert first.returncode == 0 and out == "second answer\n", err
    tasks = [r["content"] for r in read_jsonl(folder / "messages.jsonl") if r.get("role") == "user"]
    assert not any("me too" in t for t in tasks)  # nothing of the refused run in the log
    check_logs(rlm_env)


def test_resume_after_a_torn_last_line_starts_a_new_line(model, rlm_env):
    folder = _done_session(model, rlm_env)
    with (folder / "messages.jsonl").open("a") as handle:
        handle.write('{"role": "assistant", "content": "cut off by a ki')
    model.script(reply("resumed answer"))
    result = run_cli("--resume", folder.name, "-q", "go on", env={"RLM_TOOLS": ""})
    assert result.returncode == 0, result.stderr
    records = read_jsonl(folder / "messages.jsonl")
    assert records[-1]["content"] == "resumed answer"
    assert any(r.get("content") == "go on" or "go on" in str(r.get("content")) for r in records)


# -- sessions export targets -----------------------------------------------------------------


def test_export_jsonl_never_overwrites_without_force(model, rlm_env, tmp_path):
    folder = _done_session(model, rlm_env)
    target = tmp_path / "train.jsonl"
    target.write_text("precious\n")
    args = ("sessions", "export", folder.name, "--format", "jsonl", "-o", str(target))
    _assert_one_line(_run(*args), 2, "already exists", "--force")
    assert target.read_text() == "precious\n"
    forced = _run(*args, "--force")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(target.read_text().splitlines()[0])


def test_export_ipynb_never_overwrites_without_force(model, rlm_env, tmp_path):
    folder = _done_session(model, rlm_env)
    out = tmp_path / "notebooks"
    args = ("sessions", "export", folder.name, "--format", "ipynb", "-o", str(out))
    first = _run(*args)
    assert first.returncode == 0, first.stderr
    (notebook,) = out.iterdir()
    notebook.write_text("precious")
    _assert_one_line(_run(*args), 2, "already exist", "--force")
    assert notebook.read_text() == "precious"
    assert _run(*args, "--force").returncode == 0
    assert json.loads(notebook.read_text())["cells"]


@pytest.mark.parametrize("fmt", ["jsonl", "ipynb"])
def test_export_to_an_unusable_target_is_one_line(model, rlm_env, tmp_path, fmt):
    folder = _done_session(model, rlm_env)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    # jsonl into an existing folder; ipynb into a folder that is a file; both below a file
    targets = [tmp_path, blocker] if fmt == "jsonl" else [blocker]
    targets.append(blocker / "below" / "out")
    for target in targets:
        result = _run("sessions", "export", folder.name, "--format", fmt, "-o", str(target))
        _assert_one_line(result, 2, "rlm sessions:")
    assert blocker.read_text() == "x"


# -- the memory of a big --input -------------------------------------------------------------


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def test_big_input_leaves_the_orchestrator_memory_once_loaded(model, rlm_env, tmp_path):
    """The orchestrator keeps no copy of a 128 MiB input once the kernel has it, and a
    kernel restart still gets it back (from the run directory)."""
    size = 128 << 20
    big = tmp_path / "big.txt"
    with big.open("wb") as handle:
        for _ in range(size >> 20):
            handle.write(b"x" * (1 << 20))
    loaded, release = tmp_path / "loaded", tmp_path / "release"
    hold = (
        "import os, time\n"
        f"open({str(loaded)!r}, 'w').write(str(len(big)))\n"
        f"while not os.path.exists({str(release)!r}):\n"
        "    time.sleep(0.05)\n"
        "print('released')"
    )
    model.script(
        reply(None, ipython(hold)),
        reply(None, ipython("import os; os._exit(1)")),  # the kernel dies and restarts
        reply(None, ipython("print(len(big), big[:3])")),
        reply("done"),
    )
    proc = rlm_process("--input", f"big={big}", "-q", "hold the input")
    try:
        assert wait_until(loaded.exists, NO_HANG), "the kernel never loaded the input"
        rss = _rss(proc.pid)
    finally:
        release.touch()
    out, err = finish(proc, timeout=120)
    assert proc.returncode == 0 and out == "done\n", err
    assert loaded.read_text() == str(size)
    assert tool_results(model.requests)[-1].strip() == f"{size} xxx"  # reloaded after the restart
    assert rss < size, f"the orchestrator holds {rss >> 20} MiB with the input loaded"
    check_logs(rlm_env)
