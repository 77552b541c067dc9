"""rlm beside its peers: ``python -m bench --peers openrlm,rlms``.

Every subject (rlm and each peer) is driven as a user drives it, a CLI process given one task,
against the same scripted model server (``tests/scripted_model.py`` at zero latency), and the
scenarios are interleaved (each repeat runs every subject in turn) so a loaded machine slows
all of them alike. Each peer lives in its own virtual environment, created on demand under
``--peers-cache`` (openrlm on Python 3.12 where pyenv has it); a peer that cannot be installed
is skipped with one line saying why.

Scenarios, one subject process per run:

* ``rounds``: ten ``pass`` cells. Gives CLI start → first model request, CLI start → the first
  cell's result back (the second request), tool round 1 (waits for the root kernel) and the
  median of rounds 2–10.
* ``spawn``: one cell spawns children one after another; each child's first cell prints
  ``time.time()``: the first spawn of the run, and the median of the later ones.
* ``fan-out n``: one cell starts n children at once, one tool call each; wall time in the cell.
* ``memory``: n children held idle at their final model request; total PSS of the subject's
  process tree (``/proc/<pid>/smaps_rollup``) at two sizes gives the marginal PSS per idle
  child and the fixed cost.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripted_model import ScriptedModel, call, reply, wait

from .run import MIB, Stat, descendants, smaps

SHIMS = Path(__file__).resolve().parent / "peer_shims"
REPL_OUTPUT = "REPL output:"


class FingerprintModel(ScriptedModel):
    """The scripted model with a ``system_fingerprint``: openrlm's OpenRouter SDK rejects a
    completion without one."""

    def _header(self, body: dict, obj: str) -> dict[str, Any]:
        header = super()._header(body, obj)
        header["system_fingerprint"] = "fp_bench"
        return header


@dataclass
class Subject:
    """How to run one agent program: its command, environment, tool and sub-agent calls."""

    name: str
    argv: list[str]
    env: Callable[[str, Path], dict[str, str]]
    tool: str
    spawn: Callable[[str], str]
    """Code that runs a child on the task in the f-string expression and awaits its answer."""
    fan_out: Callable[[int], str]
    """Code that runs n children ``child {i}`` at once and awaits them all."""
    notes: str = ""
    isolated: bool = True
    """Each agent's code runs in a process of its own (ratios are against these peers)."""
    text_code: bool = False
    """Code goes in a fenced ```repl block of the reply's text and its output comes back in a
    user message (rlms), instead of a tool call and a tool message."""

    def cell(self, code: str) -> Any:
        if self.text_code:
            return reply(f"```repl\n{code}\n```")
        return reply(None, call(self.tool, {"code": code}))

    def final(self, text: str) -> Any:
        if self.text_code:  # rlms: an answer is set in the REPL, not written in the reply
            return self.cell(f"answer['content'] = {text!r}\nanswer['ready'] = True")
        return reply(text)

    def outputs(self, body: dict[str, Any]) -> list[str]:
        """The outputs of the cells run so far, oldest first."""
        found = []
        for m in body.get("messages", []):
            content = m.get("content")
            text = content if isinstance(content, str) else str(content)
            if self.text_code and m.get("role") == "user" and text.startswith(REPL_OUTPUT):
                found.append(text[len(REPL_OUTPUT) :].strip())
            elif not self.text_code and m.get("role") == "tool":
                found.append(text)
        return found


def _base_env(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "VIRTUAL_ENV"))}
    env["HOME"] = str(scratch / "home")
    return env


def rlm_subject(scratch: Path) -> Subject:
    def env(base_url: str, work: Path) -> dict[str, str]:
        e = _base_env(scratch)
        e.update(
            RLM_BASE_URL=base_url,
            RLM_API_KEY="sk-bench",
            RLM_MODEL="scripted",
            RLM_HOME=str(scratch / "rlm-home"),
            RLM_SDK_MAX_RETRIES="0",
            RLM_EXEC_TIMEOUT="900",
            RLM_MAX_DEPTH="1",
            RLM_MAX_CONCURRENCY="1000",
        )
        return e

    return Subject(
        name="rlm",
        argv=[sys.executable, "-m", "rlm", "-q"],
        env=env,
        tool="ipython",
        spawn=lambda task: f"await rlm.run(f{task!r})",
        fan_out=lambda n: f"await asyncio.gather(*[rlm.run(f'child {{i}}') for i in range({n})])",
    )


def _pyenv(version: str) -> Path | None:
    found = sorted(Path.home().glob(f".pyenv/versions/{version}*/bin/python"))
    return found[-1] if found else None


def ensure_venv(cache: Path, name: str, spec: str, python: Path) -> Path:
    """A venv at ``cache/name`` with ``spec`` installed (created once); returns its python."""
    venv = cache / name
    py = venv / "bin" / "python"
    stamp = venv / ".bench-installed"
    if stamp.exists() and stamp.read_text() == spec and py.exists():
        return py
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    done = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", spec], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install {spec} failed: {done.stderr.strip()[-300:]}")
    stamp.write_text(spec)
    return py


def openrlm_subject(cache: Path, scratch: Path) -> Subject:
    python = _pyenv("3.12") or Path(sys.executable)
    py = ensure_venv(cache, "openrlm", "openrlm==0.1.0", python)

    def env(base_url: str, work: Path) -> dict[str, str]:
        e = _base_env(scratch)
        e.update(BENCH_BASE_URL=base_url, OPENROUTER_API_KEY="sk-bench")
        return e

    def spawn(task: str) -> str:
        return (
            "_a = await create_agent(instructions='bench child')\n"
            f"_t = await run_agent(agent_id=_a, task=f{task!r})\n"
            "await await_result(_t)"
        )

    def fan_out(n: int) -> str:
        return (
            f"_ids = [await create_agent(instructions='bench child') for i in range({n})]\n"
            "_ts = [await run_agent(agent_id=a, task=f'child {i}') for i, a in enumerate(_ids)]\n"
            "await asyncio.gather(*[await_result(t) for t in _ts])"
        )

    return Subject(
        name="openrlm",
        argv=[
            str(py),
            str(SHIMS / "openrlm_cli.py"),
            "--model",
            "scripted",
            "--log-file",
            str(scratch / "openrlm.log"),
        ],
        env=env,
        tool="python",
        spawn=spawn,
        fan_out=fan_out,
        notes="runs each agent's code with `exec` in a forked child process (no Jupyter "
        "kernel, no kernel protocol), sub-agents only through create_agent/run_agent",
    )


def rlms_subject(cache: Path, scratch: Path) -> Subject:
    python = _pyenv("3.12") or Path(sys.executable)
    py = ensure_venv(cache, "rlms", "rlms==0.1.3", python)

    def env(base_url: str, work: Path) -> dict[str, str]:
        e = _base_env(scratch)
        e.update(BENCH_BASE_URL=base_url)
        return e

    return Subject(
        name="rlms",
        argv=[str(py), str(SHIMS / "rlms_cli.py")],
        env=env,
        tool="repl",
        spawn=lambda task: f"rlm_query(f{task!r})",
        fan_out=lambda n: f"rlm_query_batched([f'child {{i}}' for i in range({n})])",
        text_code=True,
        isolated=False,
        notes="in-process `local` environment: every agent's code runs as a thread of one "
        "process (`exec`), no cell timeout or isolation between agents",
    )


PEERS: dict[str, Callable[[Path, Path], Subject]] = {
    "openrlm": openrlm_subject,
    "rlms": rlms_subject,
}


def load_peers(
    names: list[str], cache: Path, scratch: Path, log: Callable[[str], None]
) -> list[Subject]:
    """The peers that could be set up; one line for each that could not."""
    subjects = []
    for name in names:
        factory = PEERS.get(name)
        if factory is None:
            log(f"peer {name}: skipped (unknown; known: {', '.join(PEERS)})")
            continue
        try:
            log(f"peer {name}: preparing its environment under {cache}")
            subjects.append(factory(cache, scratch))
        except Exception as exc:  # one skip line per peer; the run goes on
            log(f"peer {name}: skipped ({exc})")
    return subjects


# -- scenarios -------------------------------------------------------------------------------


def _task(body: dict[str, Any]) -> str:
    for m in body.get("messages", []):
        if m.get("role") == "user":
            c = m.get("content")
            return c if isinstance(c, str) else str(c)
    return ""


def _first_number(output: str) -> float | None:
    """The number a child's cell printed first, or None when its output was lost (rlms'
    concurrent children share one process's stdout)."""
    found = re.match(r"\s*([0-9][0-9.]*)", output)
    return float(found.group(1)) if found else None


@dataclass
class Runner:
    scratch: Path
    results: dict[str, dict[str, Stat]] = field(default_factory=dict)

    def add(self, subject: Subject, figure: str, value: float) -> None:
        self.results.setdefault(figure, {}).setdefault(subject.name, Stat()).add(value)

    def run(
        self,
        subject: Subject,
        model: ScriptedModel,
        task: str,
        on_start: Callable[[subprocess.Popen[str]], None] | None = None,
        timeout: float = 600,
    ) -> float:
        work = self.scratch / "work" / subject.name
        work.mkdir(parents=True, exist_ok=True)
        started = time.time()
        proc = subprocess.Popen(
            [*subject.argv, task],
            cwd=work,
            env=subject.env(model.base_url, work),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        if on_start is not None:
            on_start(proc)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            _, err = proc.communicate()
            raise RuntimeError(f"{subject.name} timed out on {task!r}: {err[-2000:]}") from None
        if proc.returncode != 0 or model.errors:
            raise RuntimeError(
                f"{subject.name} failed on {task!r} (exit {proc.returncode}): {err[-2000:]} "
                f"model errors: {model.errors[:3]}"
            )
        return started

    def rounds(self, subject: Subject, k: int = 10, first_latency: float = 0.0) -> None:
        """``k`` ``pass`` cells. With ``first_latency`` the model takes that long to send its
        first reply (as a real model does) and only tool round 1 is recorded, that latency
        subtracted: what the first cell still waits for once the model is not instant."""
        arrivals: list[float] = []

        def step(body: dict[str, Any]) -> Any:
            arrivals.append(time.time())
            if len(arrivals) == 1 and first_latency:
                time.sleep(first_latency)  # the scripted model's latency, not a synchronisation
            return subject.cell("pass") if len(arrivals) <= k else subject.final("done")

        with FingerprintModel() as model:
            model.script(*[step] * (k + 1), match="rounds bench")
            started = self.run(subject, model, "rounds bench")
        if first_latency:
            self.add(subject, "round_1_latency", arrivals[1] - arrivals[0] - first_latency)
            return
        self.add(subject, "cli_first_request", arrivals[0] - started)
        self.add(subject, "cli_first_cell", arrivals[1] - started)
        self.add(subject, "round_1", arrivals[1] - arrivals[0])
        later = Stat([b - a for a, b in itertools.pairwise(arrivals[1:])])
        self.add(subject, "round_later", later.median)

    def spawn(self, subject: Subject, n: int) -> None:
        ran: list[float] = []

        def child(body: dict[str, Any]) -> Any:
            found = re.search(r"t0=([0-9.]+)", _task(body))
            assert found is not None
            tools = subject.outputs(body)
            if not tools:
                return subject.cell("import time\nprint(repr(time.time()))")
            printed = _first_number(tools[-1])
            if printed is None:
                self.add(subject, "lost_output", 1)
            else:
                ran.append(printed - float(found.group(1)))
            return subject.final("done")

        cell = f"import time\nfor i in range({n + 1}):\n" + "\n".join(
            "    " + line for line in subject.spawn("child {i} t0={time.time()!r}").splitlines()
        )
        with FingerprintModel() as model:
            model.script(*[child] * (2 * (n + 1)), match="child ")
            model.script(subject.cell(cell), subject.final("done"), match="spawn bench")
            self.run(subject, model, "spawn bench")
        self.add(subject, "spawn_first", ran[0])
        self.add(subject, "spawn_later", Stat(ran[1:]).median)

    def fan_out(self, subject: Subject, n: int, hold: bool = False) -> dict[str, float]:
        result: dict[str, float] = {}
        finals: list[int] = []
        lost: list[int] = []
        lock = threading.Lock()
        release = threading.Event()
        pid: list[int] = []

        def child(body: dict[str, Any]) -> Any:
            tools = subject.outputs(body)
            if not tools:
                return subject.cell("import os\nx = 1\nprint(os.getpid())")
            with lock:
                printed = _first_number(tools[-1])
                if printed is None:  # the child's cell ran but its output never reached it
                    lost.append(1)
                finals.append(int(printed or 0))
                last = len(finals) == n
            if not hold:
                return subject.final("done")
            if last:
                tree = descendants(pid[0])
                result["pss"] = sum(smaps(p)["pss"] for p in tree)
                # Children that are threads of one process (rlms) have no USS of their own.
                kernels = set(finals) - {pid[0], 0}
                result["uss"] = Stat([smaps(p)["uss"] for p in kernels]).median
                release.set()
                return subject.final("done")
            return wait(release, then=subject.final("done"), timeout=300)

        # Also written to a file: rlms may lose a cell's printed output (see _first_number).
        wall_file = self.scratch / "work" / subject.name / "bench-wall.txt"
        wall_file.unlink(missing_ok=True)

        def root_final(body: dict[str, Any]) -> Any:
            text = " ".join(subject.outputs(body))
            if wall_file.exists():
                text += " " + wall_file.read_text()
            found = re.search(r"wall=([0-9.]+)", text)
            assert found is not None, subject.outputs(body)
            result["wall"] = float(found.group(1))
            return subject.final("done")

        cell = (
            "import asyncio, time\n"
            "t0 = time.perf_counter()\n"
            f"{subject.fan_out(n)}\n"
            "wall = f'wall={time.perf_counter() - t0:.4f}'\n"
            f"open({str(wall_file)!r}, 'w').write(wall)\n"
            "print(wall)\n"
        )
        with FingerprintModel() as model:
            model.script(*[child] * (2 * n), match="child ")
            model.script(subject.cell(cell), root_final, match="fanout bench")
            self.run(subject, model, "fanout bench", on_start=lambda p: pid.append(p.pid))
        result["lost"] = len(lost)
        return result


#: The first reply's latency in the second rounds scenario: a fast hosted model's.
FIRST_LATENCY = 0.2


def run_peers(
    subjects: list[Subject], scratch: Path, quick: bool, log: Callable[[str], None]
) -> dict[str, dict[str, Stat]]:
    """Every scenario for every subject, interleaved; ``{figure: {subject: Stat}}``."""
    runner = Runner(scratch)
    repeats = 2 if quick else 5
    small, large = 2, (6 if quick else 12)
    for r in range(repeats):
        for s in subjects:
            log(f"peers: {s.name} rounds / spawn, repeat {r + 1}/{repeats}")
            runner.rounds(s)
            runner.rounds(s, first_latency=FIRST_LATENCY)
            runner.spawn(s, 3 if quick else 5)
    for n in (10, 50):
        for _ in range(1 if quick or n == 50 else 2):
            for s in subjects:
                log(f"peers: {s.name} fan-out {n}")
                done = runner.fan_out(s, n)
                runner.add(s, f"fan_{n}", done["wall"])
                runner.add(s, f"lost_{n}", done["lost"])
    for s in subjects:
        log(f"peers: {s.name} memory with {small} and {large} idle children")
        a = runner.fan_out(s, small, hold=True)
        b = runner.fan_out(s, large, hold=True)
        per = (b["pss"] - a["pss"]) / (large - small)
        runner.add(s, "mem_per_child", per)
        runner.add(s, "mem_fixed", a["pss"] - small * per)
        runner.add(s, "uss_child", b["uss"])
    return runner.results


# -- report ----------------------------------------------------------------------------------

FIGURES: list[tuple[str, str, str]] = [
    ("round_later", "tool round (`pass` cell), median of rounds 2–10", "s"),
    ("round_1", "tool round 1 (the first cell; waits for the root's kernel)", "s"),
    (
        "round_1_latency",
        f"tool round 1 when the model's first reply takes {FIRST_LATENCY * 1000:.0f} ms "
        "(subtracted)",
        "s",
    ),
    ("cli_first_request", "CLI start → first model request", "s"),
    ("cli_first_cell", "CLI start → first cell's result back", "s"),
    ("spawn_later", "spawn: in-cell call → child's first cell has run (later spawns)", "s"),
    ("spawn_first", "first spawn of a run", "s"),
    ("fan_10", "fan-out of 10 children, one tool call each (wall in the cell)", "s"),
    ("fan_50", "fan-out of 50 children", "s"),
    ("mem_per_child", "memory per extra idle child (marginal PSS of the tree)", "b"),
    ("mem_fixed", "fixed memory of a run with sub-agents (PSS, children excluded)", "b"),
    ("uss_child", "USS of one idle child's process (median)", "b"),
    ("lost_10", "children of a fan-out of 10 whose cell output was lost (median)", "n"),
    ("lost_50", "children of a fan-out of 50 whose cell output was lost", "n"),
]


def _fmt(value: float, unit: str) -> str:
    if value != value:  # nan
        return "–"
    if unit == "b":
        return f"{value / MIB:.1f} MiB"
    if unit == "n":
        return f"{value:.0f}"
    return f"{value * 1000:.0f} ms" if value >= 0.1 else f"{value * 1000:.1f} ms"


def render(results: dict[str, dict[str, Stat]], subjects: list[Subject]) -> list[str]:
    peers = [s.name for s in subjects if s.name != "rlm"]
    isolated = {s.name for s in subjects if s.name != "rlm" and s.isolated}
    lines = ["", "### rlm beside its peers (same scripted model, interleaved in this run)", ""]
    header = ["figure", "rlm", *peers, "best isolated peer", "rlm / best isolated peer"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for key, label, unit in FIGURES:
        figure = results.get(key, {})
        ours = figure.get("rlm", Stat()).median
        theirs = {p: figure.get(p, Stat()).median for p in peers}
        valid = {p: v for p, v in theirs.items() if p in isolated and v == v and v > 0}
        best = min(valid, key=lambda p: valid[p]) if valid else None
        ratio = f"{ours / valid[best]:.2f}×" if best and ours == ours and unit != "n" else "–"
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    _fmt(ours, unit),
                    *(_fmt(theirs[p], unit) for p in peers),
                    best or "–",
                    ratio,
                ]
            )
            + " |"
        )
    return lines


# -- entry point -----------------------------------------------------------------------------

#: Sections of docs/performance.md that other modes than the plain benchmark write; each
#: mode replaces only its own, and the plain run carries them over.
SECTIONS = ("peers", "thousand", "gateway")


def _markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def cold_kernel_start() -> float:
    """Seconds for jupyter_client to start an ipykernel and see it answer (``wait_for_ready``),
    in a fresh process as the CLI does."""
    code = (
        "import asyncio, time\n"
        "t0 = time.perf_counter()\n"
        "from jupyter_client.manager import AsyncKernelManager\n"
        "async def main():\n"
        "    km = AsyncKernelManager(transport='ipc', ip='k')\n"
        "    await km.start_kernel(extra_arguments=['--HistoryManager.enabled=False'])\n"
        "    c = km.client(); c.start_channels()\n"
        "    await c.wait_for_ready(timeout=60)\n"
        "    print(time.perf_counter() - t0)\n"
        "    c.stop_channels(); await km.shutdown_kernel(now=True)\n"
        "asyncio.run(main())\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True, check=True
        )
    return float(out.stdout.split()[-1])


def write_section(path: Path, name: str, section: list[str]) -> None:
    """Replace section ``name`` of ``path`` (or append it), leaving the rest as it is."""
    begin, end = _markers(name)
    text = path.read_text() if path.exists() else ""
    block = "\n".join([begin, *section, "", end])
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


def keep_section(old: str, new: str) -> str:
    """``new`` with the sections of ``old`` that only other modes write carried over (the
    plain benchmark does not re-measure them, so it must not drop their tables)."""
    for name in SECTIONS:
        begin, end = _markers(name)
        if begin in old and end in old:
            block = begin + old.split(begin, 1)[1].split(end, 1)[0] + end
            new = new.rstrip("\n") + "\n\n" + block + "\n"
    return new


def main_peers(args: Any, scratch: Path) -> int:
    began = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - began:6.1f} s] {text}", file=sys.stderr, flush=True)

    names = [n.strip() for n in args.peers.split(",") if n.strip()]
    subjects = [rlm_subject(scratch), *load_peers(names, args.peers_cache, scratch, log)]
    results = run_peers(subjects, scratch, args.quick, log)
    cold = Stat()
    for _ in range(3):
        cold.add(cold_kernel_start())
    elapsed = time.perf_counter() - began
    section = render(results, subjects)
    section += targets(results, cold, subjects)
    command = "uv run python -m bench --peers " + args.peers + (" --quick" if args.quick else "")
    section.insert(
        2,
        f"Written by `{command}` in {elapsed:.0f} s; medians; each repeat runs every subject "
        "in turn. Absolute times move with the machine's load: read the ratios.",
    )
    section += ["", *UNFAIR]
    print("\n".join(section))
    if not args.no_write:
        write_section(args.out, "peers", section)
        log(f"wrote the peers section of {args.out}")
    return 0


UNFAIR = [
    "What makes the comparison unfair:",
    "",
    "* openrlm runs each agent's code with `exec` in a process forked from its own fork "
    "server, not in a Jupyter kernel: no kernel protocol, no IOPub, no interrupt/restart of a "
    "kernel, so its rounds and spawns skip work rlm does for every cell.",
    "* rlms (the RLM paper's library) with its `local` environment runs every agent's code "
    "with `exec` as threads of the one CLI process: no process per agent, no isolation, no "
    "cell timeout, and concurrent children share one stdout (the lost-output rows). Its "
    "memory per child is a thread's. It is shown for reference; ratios are against the best "
    "isolated peer. It has no CLI: `bench/peer_shims/rlms_cli.py` is one, and it also shows "
    "each child's task in its first message so the scripted model can route it.",
    "* rlm writes every message of every agent to its session log (flushed as it happens) and "
    "checks budgets per request; openrlm logs to one file.",
    "* The tasks are trivial and the model answers at once, so these figures are the "
    "frameworks' own overhead: with a real model the model's latency dominates every row.",
    "* Memory is the PSS of each subject's whole process tree (the CLI and everything it "
    "started), read while the children wait on the model; libraries preloaded by a zygote or "
    "fork server are shared and count once.",
]


def targets(results: dict[str, dict[str, Stat]], cold: Stat, subjects: list[Subject]) -> list[str]:
    def med(key: str, who: str = "rlm") -> float:
        return results.get(key, {}).get(who, Stat()).median

    def best(key: str) -> float:
        values = [med(key, s.name) for s in subjects if s.name != "rlm" and s.isolated]
        values = [v for v in values if v == v]
        return min(values) if values else float("nan")

    def verdict(ok: bool) -> str:
        return "met" if ok else "**missed**"

    rows: list[tuple[str, str, bool]] = []
    first_cell, peer_cell = med("cli_first_cell"), best("cli_first_cell")
    if peer_cell == peer_cell:
        r = first_cell / peer_cell
        rows.append(
            ("CLI start → first cell's result ≤ 0.7× the best isolated peer", f"{r:.2f}×", r <= 0.7)
        )
    r1 = med("round_1") / med("round_later")
    rows.append(("tool round 1 ≤ 2× a later round", f"{r1:.1f}×", r1 <= 2))
    r1 = med("round_1_latency") / med("round_later")
    rows.append(
        (
            f"(the same when the model's first reply takes {FIRST_LATENCY * 1000:.0f} ms, "
            "subtracted)",
            f"{r1:.1f}×",
            r1 <= 2,
        )
    )
    rc = med("cli_first_request") / cold.median
    rows.append(
        (
            "CLI start → first model request ≤ 0.7× a cold kernel start "
            f"({_fmt(cold.median, 's')})",
            f"{rc:.2f}×",
            rc <= 0.7,
        )
    )
    uss, fixed = med("uss_child"), med("mem_fixed")
    rows.append(("≤ 10 MiB USS per idle forked child", _fmt(uss, "b"), uss <= 10 * MIB))
    rows.append(
        (
            "≤ 100 MiB fixed (PSS of the run without its children)",
            _fmt(fixed, "b"),
            fixed <= 100 * MIB,
        )
    )
    for key, label in (("round_later", "tool round"), ("spawn_later", "pooled spawn")):
        peer = best(key)
        if peer == peer:
            r = med(key) / peer
            rows.append((f"keep the lead: {label} < the best isolated peer", f"{r:.2f}×", r < 1))
    lines = ["", "#### Targets against the peers (issue 21)", ""]
    lines += ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {verdict(ok)} |" for t, m, ok in rows]
    return lines
