"""The ``rlm`` command: ``rlm "task"`` prints the answer; progress goes to stderr.

Exit codes: 0 answer, 1 the run ended without one, 2 bad usage or configuration,
130 interrupted (SIGINT), 143 terminated (SIGTERM). With ``--json`` stdout gets exactly one
JSON object whatever happens (``reason`` says how it ended), so scripts never parse an empty
stdout. Settings flags come from :mod:`rlm.cli.flags`. Subcommands (``rlm sessions ...``,
``rlm skill ...``, ``rlm eval ...``) are recognised only as the first word; ``rlm -- sessions``
runs the prompt "sessions".
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import json
import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

#: Commands that never make a model request: they start no kernel early.
_NO_MODEL = frozenset({"skill", "sessions", "eval", "-h", "--help", "--version"})

#: Whether this process is the ``rlm`` command (console script or ``python -m rlm``), not a
#: program that imports this module (a test calling ``main(argv)`` starts no kernel here).
_IS_COMMAND = sys.argv[0].endswith(("rlm", os.path.join("rlm", "__main__.py")))

if _IS_COMMAND and not (sys.argv[1:2] and sys.argv[1] in _NO_MODEL):
    from rlm.kernels import prestart as _prestart

    if _prestart.wanted(sys.argv[1:], os.environ):
        # The root kernel starts now, on the other core, while this process imports; the
        # launcher adopts it only if it is the kernel the run would start (else it is killed).
        _prestart.prestart()

from rlm.cli.flags import add_settings_flags, describe_flags, flag_values  # noqa: E402 (after the kernel prestart)
from rlm.config import Settings, load_settings  # noqa: E402 (after the kernel prestart)
from rlm.errors import AgentError, ConfigError, RLMError  # noqa: E402 (after the kernel prestart)
from rlm.terminal import safe  # noqa: E402 (after the kernel prestart)

if TYPE_CHECKING:
    from pydantic_settings import CliSettingsSource

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    #: Set when the command line asks for ``--json``: a usage error is then reported as the
    #: one JSON object too (scripts parse stdout, whatever went wrong).
    json_errors = False
    #: The pydantic-settings source that added the settings' flags (it reads them back).
    settings_source: CliSettingsSource[Settings]

    def format_help(self) -> str:
        describe_flags(self)
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        line = f"{message} (see {self.prog} --help)"
        if self.json_errors:
            out = Outcome()
            out.fail(line, "config")
            print(json.dumps(out.record(), ensure_ascii=False), flush=True)
            self.exit(2)
        self.exit(2, f"{self.prog}: error: {line}\n")


def build_parser() -> _Parser:
    parser = _Parser(
        prog="rlm",
        description="Run an LLM agent on a real Jupyter kernel. The final answer goes to "
        "stdout, progress to stderr. Every flag overrides the environment variable named in "
        "its help. Without a prompt, rlm reads one task per line (interactive when stdin is a "
        "terminal). Other commands: `rlm sessions ...` (browse and export logs), "
        "`rlm skill new NAME`, `rlm eval ...` (benchmark methods on long-context tasks). A prompt that equals a command "
        "name goes after `--`: rlm -- sessions.",
        epilog="The API key is read from RLM_API_KEY (falling back to OPENAI_API_KEY), never "
        "from a flag. Sandbox for model-written code (RLM_SANDBOX, named on stderr at start "
        "unless -q): off (default; cells run with your full access), workspace (Landlock: "
        "writes only in the working directory; RLM_NETWORK=off denies TCP), strict "
        "(bubblewrap: read-only system, private /tmp, own PID and network namespace; falls "
        "back to workspace with a warning where bwrap cannot run). Per-kernel limits: "
        "RLM_KERNEL_MEMORY (e.g. 4G) and RLM_KERNEL_PROCESSES (e.g. 256). See docs/security.md. "
        "Exit codes: 0 answer, 1 no answer (see stderr), 2 bad usage or "
        "configuration, 130/143 interrupted.",
    )
    from rlm import __version__

    parser.add_argument("prompt", nargs="*", help="the task; several words are joined by spaces")
    parser.add_argument("--version", action="version", version=f"rlm {__version__}")
    parser.settings_source = add_settings_flags(parser)
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="load the text of PATH into variable NAME of the agent's kernel (repeatable); "
        "the prompt lists its name, type and size, not its content",
    )
    parser.add_argument(
        "--functions",
        action="append",
        default=[],
        metavar="PATH|MODULE",
        help="host functions: a .py file or module whose register() or __all__ gives callables "
        "that run in this process and every kernel can call as `await name(...)` (repeatable)",
    )
    parser.add_argument(
        "--acp",
        action="store_true",
        help="serve the Agent Client Protocol on stdin/stdout for an editor (Zed, ...): one "
        "session per editor session, the kernel kept across prompts; stdout carries only "
        "protocol messages",
    )
    parser.add_argument(
        "--print-system-prompt",
        action="store_true",
        help="print the system prompt the agent would get and exit without calling the model",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the answer")
    parser.add_argument(
        "--json",
        action="store_true",
        help='print exactly one JSON object on stdout, however the run ends: {"result", '
        '"error", "reason", "session", "usage", "cost"}; reason is the stop reason (answer, '
        "max_turns, model_error, ...), config (exit 2) or interrupted",
    )
    parser.add_argument(
        "--events", action="store_true", help="write every event as a JSON line to stderr"
    )
    parser.add_argument(
        "--context",
        metavar="FILE",
        help='a JSON list of {"role": "user"|"assistant", "content": str} placed after the '
        "system prompt",
    )
    parser.add_argument(
        "--resume",
        metavar="ID",
        help="continue an earlier session (id or unique prefix, not a path) in a fresh kernel; its "
        "history is rebuilt from messages.jsonl and new messages append to the same log",
    )
    return parser


def _read_inputs(specs: list[str], limit: int, *, read: bool = True) -> dict[str, str]:
    """The ``--input`` files' text; only regular files (``/dev/zero`` or a FIFO would never
    end) of at most ``limit`` bytes (``RLM_MAX_INPUT_BYTES``). ``read=False`` only checks."""
    from rlm.safeio import check_regular, read_regular

    inputs: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(
                f"--input: expected NAME=PATH with NAME a Python identifier (got {spec!r})"
            )
        try:
            if not read:
                check_regular(path, limit, follow=True)
                continue
            data = read_regular(path, limit, follow=True)
        except OSError as exc:
            hint = " (RLM_MAX_INPUT_BYTES)" if exc.errno == errno.EFBIG else ""
            raise ConfigError(
                f"--input: cannot read {path!r}: {exc.strerror or exc}{hint}"
            ) from None
        inputs[name] = data.decode("utf-8", errors="replace")
        del data
    return inputs


def _observers(args: argparse.Namespace) -> tuple[Any, Any]:
    """The event callback for this run, and the live view (if any) to start and stop."""
    from rlm.agent.events import Event
    from rlm.cli.progress import LineProgress

    callbacks: list[Any] = []
    live = None
    if args.events:
        callbacks.append(
            lambda e: print(json.dumps(e.as_dict(), default=str), file=sys.stderr, flush=True)
        )
    elif not args.quiet:
        if sys.stderr.isatty():
            from rlm.cli.live import LiveView  # rich: only for a terminal's live view

            live = LiveView()
            callbacks.append(live)
        else:
            callbacks.append(LineProgress())

    def fan_out(event: Event) -> None:
        for callback in callbacks:
            callback(event)

    return (fan_out if callbacks else None), live


def _session_factory(args: argparse.Namespace, settings: Settings, on_event: Any) -> Any:
    from rlm.runtime.functions import load_functions
    from rlm.runtime.session import Session, load_context_file

    context = load_context_file(args.context) if args.context else None
    functions = load_functions(args.functions)
    _read_inputs(args.input, settings.max_input_bytes, read=False)  # bad input: exit 2 now

    def make() -> Session:
        # Read again for each session, so this closure holds no copy for the whole run.
        inputs = _read_inputs(args.input, settings.max_input_bytes)
        return Session(
            settings=settings,
            on_event=on_event,
            context=context,
            resume=args.resume,
            inputs=inputs,
            functions=functions,
        )

    return make


@dataclass
class Outcome:
    """How a one-shot run ended: the ``--json`` record, or the answer / error line."""

    result: str | None = None
    error: str | None = None
    reason: str | None = None
    """Machine-readable: the agent's stop reason (``answer``, ``max_turns``,
    ``model_error``, ...), ``config`` for a configuration error, ``interrupted`` on a signal."""
    session: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost: float | None = None
    """Dollars of the whole tree (``RLM_PRICES``), next to its usage."""

    def fail(self, error: BaseException | str, reason: str) -> None:
        self.error, self.reason = str(error), reason
        if isinstance(error, AgentError) and error.session_path:
            self.session = error.session_path

    def record(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "error": self.error,
            "reason": self.reason,
            "session": self.session,
            "usage": self.usage,
            "cost": self.cost,
        }


async def _run_task(args: argparse.Namespace, settings: Settings, task: str, out: Outcome) -> int:
    """Run ``task`` to its end, filling ``out`` as far as the run got (the session path as
    soon as it is open, so an interrupted run still reports it)."""
    on_event, live = _observers(args)
    make_session = _session_factory(args, settings, on_event)
    if live is not None:
        live.start(task)
    try:
        async with make_session() as session:
            out.session = str(session.path)
            _sandbox_notice(args, settings, live)
            try:
                out.result = await session.send(task)
                out.reason = "answer"
            except AgentError as exc:
                out.fail(exc, exc.reason)
            finally:
                out.usage = session.usage.as_dict()
                out.cost = round(session.cost, 6)
    finally:
        if live is not None:
            live.stop()
    return 0 if out.error is None else 1


def _print_system_prompt(args: argparse.Namespace, settings: Settings) -> int:
    """The system prompt a root agent would get for the same settings and flags, without
    starting a kernel or calling the model.

    A real run lists the skills its kernel managed to import, the host functions and the MCP
    servers' tools (the servers are started to list them), and only when it starts a kernel (the ipython tool is on, or ``--input`` is given). The kernel runs
    in this same Python, so importing the skills here gives the same list and signatures; a
    skill whose import behaves differently inside a kernel is the one possible difference.
    """
    from rlm.agent.prompt import InputInfo, PromptParts, render_system_prompt
    from rlm.control.inputs import pack_inputs
    from rlm.runtime.functions import HostFunctions, load_functions
    from rlm.skills import discovery as skills
    from rlm.skills.entry import load_skills

    inputs = _read_inputs(args.input, settings.max_input_bytes)
    infos, _ = pack_inputs(inputs)
    section = ""
    if inputs or "ipython" in settings.tools:
        found = skills.discover()
        loaded = load_skills([skill.name for skill in found], {})["loaded"] if found else {}
        functions = HostFunctions(load_functions(args.functions)).prompt_section()
        section = skills.prompt_section(found, loaded) + functions + _mcp_section(settings)
    parts = PromptParts(
        cwd=Path.cwd().resolve(),
        skills=section,
        inputs=[InputInfo(**info) for info in infos],
    )
    print(render_system_prompt(settings, parts), end="")
    return 0


def _mcp_section(settings: Settings) -> str:
    """The MCP part of the prompt: the servers are started (and stopped) to list their tools."""
    if settings.mcp_config is None:
        return ""
    from rlm.runtime.mcp import McpServers, load_mcp_config

    config = load_mcp_config(settings.mcp_config)

    async def listed() -> str:
        servers = McpServers(config, settings.mcp_timeout, settings.mcp_start_timeout)
        async with servers:
            return servers.prompt_section()

    return asyncio.run(listed())


#: Hosts of endpoints that commonly need no API key (a local server).
_LOCAL_HOSTS = frozenset({"localhost", "localhost.", "ip6-localhost"})


def _is_local(base_url: str | None) -> bool:
    """Whether ``base_url`` points at this machine (localhost or a loopback address)."""
    host = urlsplit(base_url or "").hostname if base_url else None
    if host is None:
        return False  # no base URL: the OpenAI API
    if host.lower() in _LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _warn_if_no_key(settings: Settings) -> None:
    """Say once, on stderr, that requests will carry no real API key: otherwise the first
    sign is an endpoint's 401 after retries. Skipped for a local endpoint, where many servers
    need none. Printed under ``-q`` too: it is one line on stderr, and stdout stays the answer."""
    if settings.key is None and not _is_local(settings.base_url):
        where = settings.base_url or "the OpenAI API"
        print(
            f"rlm: no API key set (RLM_API_KEY or OPENAI_API_KEY); requests to {where} go "
            "out without one",
            file=sys.stderr,
            flush=True,
        )


def _sandbox_notice(args: argparse.Namespace, settings: Settings, live: Any = None) -> None:
    """Say on stderr which sandbox model-written code runs in: one line once the session is
    open (settings, inputs and resume checked), not under ``-q``, and only when such code can
    run (a kernel or the bash tool). A fallback (strict without bwrap, workspace without
    Landlock) is a warning of its own, printed when the run opens even under ``-q``."""
    from rlm.sandbox.policy import describe, resolve_mode

    code_runs = bool(args.input) or any(t in settings.tools for t in ("ipython", "bash"))
    if not code_runs or args.quiet:
        return
    line = describe(resolve_mode())
    if live is not None:
        live.console.print(line, markup=False, highlight=False)
    else:
        print(line, file=sys.stderr, flush=True)


def _interactive(args: argparse.Namespace, settings: Settings) -> int:
    from rlm.cli.interactive import run_interactive

    on_event, live = _observers(args)
    make_session = _session_factory(args, settings, on_event)
    _sandbox_notice(args, settings)

    def show(answer: str) -> None:
        if args.json:
            print(json.dumps({"result": answer}, ensure_ascii=False), flush=True)
        else:
            print(answer, flush=True)

    return run_interactive(
        make_session,
        show=show,
        before_turn=live.start if live else (lambda text: None),
        after_turn=live.stop if live else (lambda: None),
    )


def _acp(parser: _Parser, args: argparse.Namespace, settings: Settings) -> int:
    """``rlm --acp``: the editor sends the prompts, so the flags that carry one are refused."""
    from rlm.frontends.acp import protect_stdout, run_acp
    from rlm.runtime.functions import load_functions
    from rlm.runtime.mcp import load_mcp_config

    given = [
        flag
        for flag, value in (
            ("prompt", args.prompt),
            ("--json", args.json),
            ("--resume", args.resume),
            ("--input", args.input),
            ("--context", args.context),
        )
        if value
    ]
    if given:
        parser.error(f"--acp takes no {', '.join(given)} (the editor sends the prompts)")
    functions = load_functions(args.functions)
    if settings.mcp_config is not None:
        load_mcp_config(settings.mcp_config)  # a bad file: exit 2 now, not at each session
    return _run_async(run_acp(settings, functions, protect_stdout()))


def _exit_now(signum: int, _frame: object) -> None:
    """The second SIGINT/SIGTERM: leave at once, whatever the cleanup is waiting for.

    A plain signal handler runs between two bytecodes of the main thread, so even a blocked
    event loop cannot delay it. Kernels end with rlm (they watch their parent); the session
    stays ``running`` in meta.json with rlm's pid, as after ``kill -9``."""
    os.write(2, b"rlm: interrupted again; exiting without cleanup\n")
    os._exit(128 + signum)


def _run_async(coro: Any) -> int:
    """Run the CLI's coroutine; SIGTERM cancels it like Ctrl-C so kernels are shut down, and a
    second SIGTERM or SIGINT during that cleanup exits at once."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}

    async def guarded() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        got: list[int] = []

        def stop(signum: int) -> None:
            got.append(signum)
            for other in previous:
                loop.remove_signal_handler(other)
                signal.signal(other, _exit_now)
            if task is not None:
                task.cancel()

        for signum in previous:
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await coro
        except asyncio.CancelledError:
            return 128 + (got[0] if got else signal.SIGINT)

    try:
        return asyncio.run(guarded())
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        os.getcwd()
    except FileNotFoundError:
        print("rlm: the working directory no longer exists; cd somewhere", file=sys.stderr)
        return 2
    if argv and argv[0] == "skill":
        from rlm.cli.skill import main as skill_main

        return skill_main(argv[1:])
    if argv and argv[0] == "sessions":
        from rlm.cli.sessions import main as sessions_main

        return sessions_main(argv[1:])
    if argv and argv[0] == "eval":
        from rlm.cli.eval import main as eval_main

        return eval_main(argv[1:])
    parser = build_parser()
    options = argv[: argv.index("--")] if "--" in argv else argv
    parser.json_errors = "--json" in options
    args = parser.parse_args(argv)
    if args.prompt and not " ".join(args.prompt).strip():
        parser.error("the prompt is empty; give a task, or no prompt for interactive mode")
    overrides = flag_values(parser.settings_source, args)
    out = Outcome()
    try:
        settings = load_settings(**overrides)
        if args.print_system_prompt:
            return _print_system_prompt(args, settings)
        _warn_if_no_key(settings)
        if args.acp:
            return _acp(parser, args, settings)
        if not args.prompt:
            return _interactive(args, settings)
        code = _run_async(_run_task(args, settings, " ".join(args.prompt), out))
        if code >= 128:
            out.fail(f"interrupted by {signal.Signals(code - 128).name}", "interrupted")
    except ConfigError as exc:
        out.fail(exc, "config")
        code = 2
    except AgentError as exc:  # raised while the session opened (kernel failure at start)
        out.fail(exc, exc.reason)
        code = 1
    except RLMError as exc:
        out.fail(exc, "error")
        code = 1
    return _report(args, out, code)


def _report(args: argparse.Namespace, out: Outcome, code: int) -> int:
    """With ``--json`` exactly one JSON object on stdout, whatever happened; otherwise the
    answer on stdout or the error as one line on stderr (a signal is reported by the
    progress output, not here)."""
    if args.json:
        print(json.dumps(out.record(), ensure_ascii=False), flush=True)
    elif out.result is not None:
        print(out.result, flush=True)
    elif out.error is not None and out.reason != "interrupted":
        print(f"rlm: {safe(out.error)}", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
