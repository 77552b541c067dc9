"""rlm's benchmark: ``uv run python -m bench`` from the repository root.

Drives the real ``rlm`` CLI (a subprocess, so the model server's threads in this process do not
share the orchestrator's GIL) against the scripted model of ``tests/scripted_model.py`` at zero
latency, and prints a markdown report that is also written to ``docs/performance.md``.

Scenarios (every one in the same run, so ratios compare like with like):

* spawn latency: a cell calls ``await rlm.run(...)`` N times in a row; each child's task carries
  the cell's ``time.time()``; the child's first reply runs a cell that prints ``time.time()``
  and the model server reads it from the child's second request (the time to the child's
  first request is noted too: it does not wait for the child's kernel). Cold (``RLM_KERNEL_START=cold``, no pool), fork (no pool) and pool (fork, pool of 2).
* tool round: a root agent makes K ``pass`` tool calls; a round is the time between two model
  requests. Compared with a raw jupyter_client ``execute('pass')`` round trip (reply + idle)
  on a kernel started here.
* fan-out: one cell gathers 10 / 50 / 100 children (``RLM_MAX_CONCURRENCY`` = n), each makes
  one tool call; wall time is measured in the cell. A separate run per n holds every child at
  its final model request so memory is read while all n kernels are alive and idle: total PSS
  of the CLI's process tree and USS of each child's kernel (``/proc/<pid>/smaps_rollup``).
* CLI: ``python -m rlm -q TASK`` from ``Popen`` to the first model request.
* sandbox overhead (``bench/sandbox.py``; ``--only-sandbox`` runs it alone): fork and pool
  spawn latency and fan-out of 10 and 50 with ``RLM_SANDBOX=off`` and ``workspace``.
* sub-model calls: one cell awaits ``rlm.llm_batch`` of 1,000 prompts (``RLM_MAX_DEPTH=1``,
  default ``RLM_LLM_CONCURRENCY``); wall time is measured in the cell, over the kernel's own
  channels and, interleaved in the same run, over the ipc socket (``--only-llm`` runs this
  scenario alone and prints its table).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from scripted_model import ScriptedModel, ipython, reply, wait  # noqa: E402

MIB = 1024 * 1024


# -- statistics ------------------------------------------------------------------------------


@dataclass
class Stat:
    """Samples of one figure (seconds or bytes)."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def pct(self, q: float) -> float:
        """Nearest-rank percentile."""
        if not self.values:
            return float("nan")
        ordered = sorted(self.values)
        rank = max(1, -(-len(ordered) * q // 100))
        return ordered[int(rank) - 1]

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    return f"{seconds:.2f} s"


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


def spread(stat: Stat, fmt: Callable[[float], str]) -> str:
    return f"{fmt(stat.median)} ({fmt(stat.lo)}–{fmt(stat.hi)})"


# -- processes and memory --------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (via /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                children = Path(f"/proc/{current}/task/{tid}/children").read_text().split()
            except OSError:
                continue
            todo.extend(int(c) for c in children)
    return found


def smaps(pid: int) -> dict[str, int]:
    """Pss and Uss (private clean + dirty) of one process, in bytes (0 if it is gone)."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {"pss": 0, "uss": 0}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            fields[parts[0][:-1]] = int(parts[1]) * 1024
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"pss": fields.get("Pss", 0), "uss": uss}


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    import ipykernel
    import jupyter_client

    return {
        "cores": str(os.cpu_count()),
        "memory": f"{mem / 1024**3:.1f} GiB",
        "cpu": cpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": f"jupyter_client {jupyter_client.__version__}, "
        f"ipykernel {ipykernel.__version__}",
    }


# -- running the CLI against the scripted model ----------------------------------------------


def _task(body: dict[str, Any]) -> str:
    for message in body.get("messages", []):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def _tool_results(body: dict[str, Any]) -> list[str]:
    return [m["content"] for m in body.get("messages", []) if m.get("role") == "tool"]


class Bench:
    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.scratch = Path(tempfile.mkdtemp(prefix="rlm-bench-"))
        (self.scratch / "work").mkdir()

    def env(self, model: ScriptedModel, **settings: Any) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RLM_")}
        env.update(
            RLM_BASE_URL=model.base_url,
            RLM_API_KEY="sk-bench",
            RLM_MODEL="scripted",
            RLM_HOME=str(self.scratch / "home"),
            RLM_SDK_MAX_RETRIES="0",
            RLM_EXEC_TIMEOUT="900",
        )
        env.update({f"RLM_{k.upper()}": str(v) for k, v in settings.items()})
        return env

    def cli(
        self,
        model: ScriptedModel,
        task: str,
        settings: dict[str, Any],
        on_start: Callable[[subprocess.Popen[str]], None] | None = None,
        timeout: float = 600,
    ) -> float:
        """Run ``python -m rlm -q task``; returns the ``time.time()`` just before ``Popen``."""
        started = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-m", "rlm", "-q", task],
            cwd=self.scratch / "work",
            env=self.env(model, **settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        if on_start is not None:
            on_start(proc)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"rlm timed out on {task!r}: {err[-2000:]}") from None
        if proc.returncode != 0 or model.errors:
            raise RuntimeError(
                f"rlm failed on {task!r} (exit {proc.returncode}): {err[-3000:]} "
                f"model errors: {model.errors[:3]}"
            )
        return started

    # -- scenarios ---------------------------------------------------------------------------

    def spawn_latency(
        self, mode: str, n: int, extra: dict[str, Any] | None = None
    ) -> tuple[Stat, float, Stat]:
        """Sequential spawns, each child running one cell. Returns the latencies to the
        child's first cell having run (after the first spawn), the first spawn's, and the
        latencies to the child's first model request (which does not wait for its kernel).
        ``extra``: more settings (``sandbox="workspace"``)."""
        ran: list[float] = []
        requested: list[float] = []

        def child(body: dict[str, Any]) -> Any:
            found = re.search(r"t0=([0-9.]+)", _task(body))
            assert found is not None
            t0 = float(found.group(1))
            tools = _tool_results(body)
            if not tools:
                requested.append(time.time() - t0)
                return reply(None, ipython("import time\nprint(repr(time.time()))"))
            ran.append(float(tools[-1].split()[0]) - t0)
            return reply("done")

        settings: dict[str, Any] = {"max_depth": 1, "kernel_start": "fork", "kernel_pool": 0}
        if mode == "cold":
            settings["kernel_start"] = "cold"
        elif mode == "pool":
            settings["kernel_pool"] = 2
        settings.update(extra or {})
        cell = (
            "import time\n"
            f"for i in range({n + 1}):\n"
            "    await rlm.run(f'child {i} t0={time.time()!r}')\n"
        )
        with ScriptedModel() as model:
            model.script(*[child] * (2 * (n + 1)), match="child ")
            model.script(reply(None, ipython(cell)), reply("done"), match="spawn bench")
            self.cli(model, "spawn bench", settings)
        return Stat(ran[1:]), ran[0], Stat(requested[1:])

    def tool_rounds(self, k: int) -> Stat:
        arrivals: list[float] = []

        def step(body: dict[str, Any]) -> Any:
            arrivals.append(time.perf_counter())
            return reply(None, ipython("pass")) if len(arrivals) <= k else reply("done")

        with ScriptedModel() as model:
            model.script(*[step] * (k + 1), match="rounds bench")
            self.cli(model, "rounds bench", {"max_turns": k + 10})
        return Stat([b - a for a, b in itertools.pairwise(arrivals)])

    def fan_out(
        self, n: int, mode: str = "fork", hold: bool = False, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """n children at once, one tool call each; with ``hold``, memory while all are idle;
        ``extra``: more settings (``sandbox="workspace"``)."""
        result: dict[str, Any] = {}
        finals: list[int] = []
        lock = threading.Lock()
        release = threading.Event()
        cli_pid: list[int] = []

        def child(body: dict[str, Any]) -> Any:
            tools = _tool_results(body)
            if not tools:
                return reply(None, ipython("import os\nx = 1\nprint(os.getpid())"))
            with lock:
                finals.append(int(tools[-1].split()[0]))
                last = len(finals) == n
            if not hold:
                return reply("done")
            if last:
                result["memory"] = self._memory(cli_pid[0], list(finals))
                release.set()
                return reply("done")
            return wait(release, then=reply("done"), timeout=300)

        def root_final(body: dict[str, Any]) -> Any:
            found = re.search(r"wall=([0-9.]+)", " ".join(_tool_results(body)))
            assert found is not None, _tool_results(body)
            result["wall"] = float(found.group(1))
            return reply("done")

        cell = (
            "import asyncio, time\n"
            "t0 = time.perf_counter()\n"
            f"await asyncio.gather(*[rlm.run(f'child {{i}}') for i in range({n})])\n"
            "print(f'wall={time.perf_counter() - t0:.4f}')\n"
        )
        settings = {
            "max_depth": 1,
            "max_concurrency": n,
            "kernel_start": "cold" if mode == "cold" else "fork",
            **(extra or {}),
        }
        with ScriptedModel() as model:
            model.script(*[child] * (2 * n), match="child ")
            model.script(reply(None, ipython(cell)), root_final, match="fanout bench")
            self.cli(model, "fanout bench", settings, on_start=lambda p: cli_pid.append(p.pid))
        return result

    def llm_calls(self, n: int, transport: str = "auto") -> float:
        """Wall time, in the cell, of ``rlm.llm_batch`` over ``n`` prompts at zero latency,
        over the kernel's own channels (``auto``) or the ipc control socket."""
        result: dict[str, float] = {}

        def root_final(body: dict[str, Any]) -> Any:
            found = re.search(r"wall=([0-9.]+) ok=([0-9]+)", " ".join(_tool_results(body)))
            assert found is not None and int(found.group(2)) == n, _tool_results(body)
            result["wall"] = float(found.group(1))
            return reply("done")

        cell = (
            "import time\n"
            "t0 = time.perf_counter()\n"
            f"out = await rlm.llm_batch([f'sub-call {{i}}' for i in range({n})])\n"
            "ok = sum(isinstance(x, str) for x in out)\n"
            "print(f'wall={time.perf_counter() - t0:.4f} ok={ok}')\n"
        )
        with ScriptedModel() as model:
            model.script(*["x"] * n, match="sub-call ")
            model.script(reply(None, ipython(cell)), root_final, match="llm bench")
            self.cli(model, "llm bench", {"max_depth": 1, "control_transport": transport})
        return result["wall"]

    @staticmethod
    def _memory(cli: int, kernels: list[int]) -> dict[str, float]:
        tree = descendants(cli)
        total = sum(smaps(pid)["pss"] for pid in tree)
        uss = Stat([smaps(pid)["uss"] for pid in kernels])
        return {
            "total_pss": total,
            "uss_median": uss.median,
            "uss_max": uss.hi,
            "processes": len(tree),
        }

    def cli_first_request(self, settings: dict[str, Any]) -> float:
        arrived: list[float] = []

        def first(body: dict[str, Any]) -> Any:
            arrived.append(time.time())
            return reply("done")

        with ScriptedModel() as model:
            model.script(first, match="cli bench")
            started = self.cli(model, "cli bench", settings)
        return arrived[0] - started

    def import_time(self) -> float:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import rlm.cli.main, rlm.runtime.orchestrator"],
            check=True,
            cwd=ROOT,
        )
        return time.perf_counter() - started

    def python_startup(self) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - started


# -- raw jupyter_client round trip -----------------------------------------------------------


async def raw_execute(n: int, scratch: Path) -> Stat:
    """``execute('pass')`` → shell reply + IOPub idle, on a kernel started here (ipc)."""
    import zmq
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(
        transport="ipc",
        ip=str(scratch / "raw"),
        connection_file=str(scratch / "raw.json"),
    )
    await km.start_kernel(extra_arguments=["--HistoryManager.enabled=False"])
    client = km.client()
    client.context.setsockopt(zmq.RECONNECT_IVL, 5)
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
        stat = Stat()
        for i in range(n + 10):
            started = time.perf_counter()
            msg_id = client.execute("pass", store_history=False)
            replied = idle = False
            while not (replied and idle):
                if not idle:
                    msg = await client.iopub_channel.get_msg(timeout=10)
                    idle = (
                        msg["parent_header"].get("msg_id") == msg_id
                        and msg["header"]["msg_type"] == "status"
                        and msg["content"]["execution_state"] == "idle"
                    )
                else:
                    msg = await client.shell_channel.get_msg(timeout=10)
                    replied = msg["parent_header"].get("msg_id") == msg_id
            if i >= 10:  # warm-up
                stat.add(time.perf_counter() - started)
        return stat
    finally:
        client.stop_channels()
        await km.shutdown_kernel(now=True)


def sdk_transform() -> list[tuple[int, float]]:
    """What the openai SDK spends turning a request's messages into JSON-ready data (it walks
    every message against the TypedDicts on each call): the cost that grows per round."""
    from openai._utils._transform import async_maybe_transform
    from openai.types.chat import completion_create_params as params

    messages: list[dict[str, Any]] = [{"role": "system", "content": "x" * 3000}]
    for i in range(100):
        call = {"name": "ipython", "arguments": '{"code": "pass"}'}
        calls = [{"id": f"c{i}", "type": "function", "function": call}]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        messages.append({"role": "tool", "tool_call_id": f"c{i}", "content": "[no output]"})

    async def measure(n: int) -> float:
        body = {"messages": messages[:n], "model": "x"}
        stat = Stat()
        for _ in range(10):
            started = time.perf_counter()
            await async_maybe_transform(body, params.CompletionCreateParamsNonStreaming)
            stat.add(time.perf_counter() - started)
        return stat.median

    return [(n, asyncio.run(measure(n))) for n in (21, 201)]


# -- report ----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs" / "performance.md", help="report file"
    )
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--only-llm", action="store_true", help="only the sub-model call scenario, printed"
    )
    parser.add_argument(
        "--only-sandbox",
        action="store_true",
        help="only the sandbox overhead scenarios; rewrites only that section of the report",
    )
    parser.add_argument(
        "--only-gateway",
        action="store_true",
        help="only kernels through a loopback Kernel Gateway vs local fork start, printed",
    )
    parser.add_argument(
        "--peers",
        default="",
        help="comma-separated peers to measure beside rlm (openrlm, rlms); see bench/peers.py",
    )
    parser.add_argument(
        "--peers-cache",
        type=Path,
        default=Path.home() / ".cache" / "rlm-bench" / "peers",
        help="where the peers' virtual environments are created",
    )
    parser.add_argument(
        "--only-thousand",
        action="store_true",
        help="only N simultaneous idle sub-agents (--children), printed; see bench/thousand.py",
    )
    parser.add_argument("--children", type=int, default=1000, help="N of --only-thousand")
    args = parser.parse_args(argv)
    quick = args.quick
    # As install.sh does (uv tool install --compile-bytecode), and for every mode: with
    # PYTHONDONTWRITEBYTECODE set, as on CI machines, every start would otherwise compile its
    # imports from source (pip-installed peers get their bytecode at install time).
    print("compiling bytecode of the environment and src/", file=sys.stderr)
    purelib = sysconfig.get_paths()["purelib"]
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j", "0", purelib, str(ROOT / "src")],
        check=False,
        stdout=subprocess.DEVNULL,
    )
    if args.only_gateway:
        from bench.gateway import gateway_scenario

        from .peers import write_section

        section = gateway_scenario(quick)
        print("\n".join(section))
        if not args.no_write:
            write_section(args.out, "gateway", section)
        return 0
    bench = Bench(quick)
    if args.only_thousand:
        from .peers import write_section
        from .thousand import main_thousand

        section = main_thousand(bench, args.children)
        print("\n".join(section))
        if not args.no_write:
            write_section(args.out, "thousand", section)
        return 0
    if args.peers:
        from .peers import main_peers

        return main_peers(args, bench.scratch)
    if args.only_llm:
        wall, over_ipc = llm_scenario(bench, quick)
        print("\n".join(render_llm(wall, over_ipc)))
        return 0
    began = time.perf_counter()
    log = lambda text: print(f"[{time.perf_counter() - began:6.1f} s] {text}", file=sys.stderr)  # noqa: E731
    from . import sandbox

    if args.only_sandbox:
        command = "uv run python -m bench --only-sandbox" + (" --quick" if quick else "")
        section = sandbox.render(sandbox.measure(bench, quick, log), command)
        log(f"done in {time.perf_counter() - began:.0f} s")
        print("\n".join(section))
        if not args.no_write:
            old = args.out.read_text() if args.out.exists() else ""
            args.out.write_text(sandbox.splice(old, section))
            log(f"wrote the sandbox section of {args.out}")
        return 0

    info = machine()
    spawns = 8 if quick else 30
    results: dict[str, Any] = {}

    for mode in ("cold", "fork", "pool"):
        log(f"spawn latency, {mode} ({spawns} sequential children)")
        results[f"spawn_{mode}"] = bench.spawn_latency(mode, spawns)

    log("raw jupyter_client execute round trip")
    results["raw"] = asyncio.run(raw_execute(50 if quick else 200, bench.scratch))
    log("tool rounds")
    results["rounds"] = bench.tool_rounds(20 if quick else 100)
    results["transform"] = sdk_transform()

    fan_sizes = (10, 50) if quick else (10, 50, 100)
    repeats = {10: 2 if quick else 5, 50: 1 if quick else 3, 100: 3}
    for n in fan_sizes:
        wall = Stat()
        for r in range(repeats[n]):
            log(f"fan-out {n} (fork), run {r + 1}/{repeats[n]}")
            wall.add(bench.fan_out(n)["wall"])
        log(f"fan-out {n} (fork), memory with all children idle")
        held = bench.fan_out(n, hold=True)
        results[f"fan_{n}"] = (wall, held["memory"])
    cold_sizes = (10,) if quick else (10, 50)
    for n in cold_sizes:
        wall = Stat()
        for r in range(1 if quick or n > 10 else 3):
            log(f"fan-out {n} (cold), run {r + 1}")
            wall.add(bench.fan_out(n, mode="cold")["wall"])
        log(f"fan-out {n} (cold), memory with all children idle")
        held = bench.fan_out(n, mode="cold", hold=True)
        results[f"cold_fan_{n}"] = (wall, held["memory"])

    log("sub-model calls: rlm.llm_batch of 1,000 prompts")
    results["llm"], results["llm_ipc"] = llm_scenario(bench, quick)
    results["sandbox"] = sandbox.measure(bench, quick, log)

    cli = Stat()
    cli_depth = Stat()
    for r in range(3 if quick else 5):
        log(f"CLI start → first model request, run {r + 1}")
        cli.add(bench.cli_first_request({}))
        cli_depth.add(bench.cli_first_request({"max_depth": 1}))
    startup, imports = Stat(), Stat()
    for _ in range(5):
        startup.add(bench.python_startup())
        imports.add(bench.import_time())
    results["cli"] = (cli, cli_depth, startup, imports)
    elapsed = time.perf_counter() - began
    log(f"done in {elapsed:.0f} s")

    report = render(info, results, elapsed, quick, fan_sizes, cold_sizes)
    command = "uv run python -m bench" + (" --quick" if quick else "")
    report = sandbox.splice(report, sandbox.render(results["sandbox"], command))
    print(report)
    if not args.no_write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        from .peers import keep_section

        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(keep_section(old, report))
        log(f"wrote {args.out}")
    return 0


#: Sub-model calls per run of the ``llm`` scenario (the issue's figure: 1,000 from one cell).
LLM_CALLS = 1000


def llm_scenario(bench: Bench, quick: bool) -> tuple[Stat, Stat]:
    """Over the kernel's own channels (the default) and, runs interleaved so both see the
    same load, over the ipc control socket (``RLM_CONTROL_TRANSPORT=ipc``)."""
    walls: dict[str, list[float]] = {"auto": [], "ipc": []}
    for _ in range(1 if quick else 3):
        for transport, runs in walls.items():
            runs.append(bench.llm_calls(LLM_CALLS, transport))
    return Stat(walls["auto"]), Stat(walls["ipc"])


def render_llm(wall: Stat, over_ipc: Stat | None = None) -> list[str]:
    lines = ["", f"### Sub-model calls (`rlm.llm_batch` of {LLM_CALLS:,} prompts from one cell)"]
    lines += table("figure", "median (min–max)")
    lines.append(row("wall time in the cell", spread(wall, secs)))
    lines.append(row("per call", ms(wall.median / LLM_CALLS)))
    if over_ipc is not None:
        lines.append(row("wall time over the ipc socket (same run)", spread(over_ipc, secs)))
    return lines


def row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def table(*header: str) -> list[str]:
    return ["", row(*header), row(*["---"] * len(header))]


def render(
    info: dict[str, str],
    r: dict[str, Any],
    elapsed: float,
    quick: bool,
    fan_sizes: tuple[int, ...],
    cold_sizes: tuple[int, ...],
) -> str:
    from .doc import HEAD, TAIL

    command = "uv run python -m bench" + (" --quick" if quick else "")
    lines = [HEAD.strip(), ""]
    lines.append(
        f"Measured on {info['cores']} cores, {info['memory']} RAM ({info['cpu']}; {info['os']}; "
        f"Python {info['python']}; {info['versions']}) by `{command}` in {elapsed:.0f} s. "
        "Times are medians with (min–max); the machine's speed drifts between runs, so compare "
        "figures of one run."
    )
    lines += ["", "### Child spawn latency (`rlm.run` in a cell → the child's first cell has run)"]
    lines += [
        "",
        "The child's first model request does not wait for its kernel (the kernel starts "
        "beside it), so the time to that request (last column) no longer shows the kernel's "
        "cost. The main figure is stricter: until the child's first cell (`print(time.time())`) "
        "has run in its kernel, which includes one model round trip at zero latency.",
    ]
    lines += table(
        "start", "p50", "p95", "min", "max", "first spawn of the run", "to first model request, p50"
    )
    for mode, label in (("cold", "cold"), ("fork", "fork"), ("pool", "pool (fork, 2 warm)")):
        stat, first, requested = r[f"spawn_{mode}"]
        lines.append(
            row(
                label,
                ms(stat.median),
                ms(stat.pct(95)),
                ms(stat.lo),
                ms(stat.hi),
                ms(first),
                ms(requested.median),
            )
        )

    raw, rounds = r["raw"], r["rounds"]
    first, last = Stat(rounds.values[:10]), Stat(rounds.values[-10:])
    ratio = first.median / raw.median
    n = len(rounds.values)
    lines += ["", "### Tool round (model latency zero, `pass` cell)"]
    lines += table("figure", "median (min–max)")
    lines.append(row("raw jupyter_client `execute('pass')` round trip", spread(raw, ms)))
    lines.append(row("rlm tool round, rounds 1–10 (model request → next)", spread(first, ms)))
    lines.append(row(f"rlm tool round, rounds {n - 9}–{n}", spread(last, ms)))
    lines.append(row("ratio round (1–10) / raw execute", f"{ratio:.1f}×"))
    for size, cost in r["transform"]:
        lines.append(row(f"openai SDK request transform alone, {size} messages", ms(cost)))

    lines += ["", "### Fan-out (children started at once from one cell, one tool call each)"]
    lines += table(
        "children",
        "start",
        "wall time",
        "total PSS, all children idle",
        "USS per idle child (median / max)",
        "processes",
    )
    for prefix, sizes, label in (
        ("fan", fan_sizes, "fork + pool 2"),
        ("cold_fan", cold_sizes, "cold"),
    ):
        for size in sizes:
            wall, memory = r[f"{prefix}_{size}"]
            uss = f"{mib(memory['uss_median'])} / {mib(memory['uss_max'])}"
            lines.append(
                row(
                    size,
                    label,
                    spread(wall, secs),
                    mib(memory["total_pss"]),
                    uss,
                    memory["processes"],
                )
            )

    lines += render_llm(r["llm"], r.get("llm_ipc"))

    cli, cli_depth, startup, imports = r["cli"]
    lines += ["", "### CLI start → first model request"]
    lines += table("figure", "median (min–max)")
    lines.append(row("`python -m rlm -q TASK` (defaults: depth 0)", spread(cli, ms)))
    lines.append(row("same with `RLM_MAX_DEPTH=1` (zygote starts too)", spread(cli_depth, ms)))
    lines.append(row("of which: bare `python -c pass`", spread(startup, ms)))
    lines.append(
        row("`python -c 'import rlm.cli.main, rlm.runtime.orchestrator'`", spread(imports, ms))
    )

    spawn_fork = r["spawn_fork"][0].median
    spawn_pool = r["spawn_pool"][0].median
    lines += ["", "### Targets"]
    lines += table("target", "measured", "verdict")
    lines.append(
        row(
            "fork-started child spawn p50 ≤ 100 ms (to its first cell run)",
            ms(spawn_fork),
            verdict(spawn_fork <= 0.1),
        )
    )
    lines.append(
        row(
            "pooled child spawn p50 ≤ 25 ms (to its first cell run)",
            ms(spawn_pool),
            verdict(spawn_pool <= 0.025),
        )
    )
    lines.append(
        row("tool round ≤ 2× raw execute (rounds 1–10)", f"{ratio:.1f}×", verdict(ratio <= 2))
    )
    if 10 in fan_sizes:
        wall10 = r["fan_10"][0].median
        lines.append(
            row("10 children, one tool call each, ≤ 1.1 s", secs(wall10), verdict(wall10 <= 1.1))
        )
    if 100 in fan_sizes:
        wall100, mem100 = r["fan_100"]
        uss100 = mem100["uss_median"]
        lines.append(
            row(
                "100 children at once ≤ 6 s, ≤ 20 MiB USS per idle child",
                f"{secs(wall100.median)}, {mib(uss100)}",
                verdict(wall100.median <= 6 and uss100 <= 20 * MIB),
            )
        )
    llm_wall = r["llm"].median
    lines.append(
        row(
            f"{LLM_CALLS:,} `rlm.llm` calls from one cell < 10 s",
            secs(llm_wall),
            verdict(llm_wall < 10),
        )
    )
    lines.append(
        row("CLI start → first model request ≤ 400 ms", ms(cli.median), verdict(cli.median <= 0.4))
    )
    lines += ["", TAIL.strip(), ""]
    return "\n".join(lines)
