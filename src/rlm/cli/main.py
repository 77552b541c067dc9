"""The ``rlm`` command: ``rlm "task"`` prints the answer; progress goes to stderr.

Exit codes: 0 answer, 1 the run ended without one, 2 bad usage or configuration,
130 interrupted (SIGINT), 143 terminated (SIGTERM). Subcommands (``rlm sessions ...``,
``rlm skill ...``) are recognised only as the first word; ``rlm -- sessions`` runs the
prompt "sessions".
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from rlm.config import Settings, env_name, flag_name, load_settings
from rlm.errors import AgentError, ConfigError, RLMError

__all__ = ["main"]

#: Settings that are never CLI flags (secrets belong in the environment, not in `ps`).
_NOT_FLAGS = {"api_key"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rlm",
        description="Run an LLM agent on a real Jupyter kernel. The final answer goes to "
        "stdout, progress to stderr. Every flag overrides the environment variable named in "
        "its help. Without a prompt, rlm reads one task per line (interactive when stdin is a "
        "terminal). Other commands: `rlm sessions ...` (browse and export logs), "
        "`rlm skill new NAME`. A prompt that equals a command "
        "name goes after `--`: rlm -- sessions.",
        epilog="The API key is read from RLM_API_KEY (falling back to OPENAI_API_KEY), never "
        "from a flag. Exit codes: 0 answer, 1 no answer (see stderr), 2 bad usage or "
        "configuration, 130/143 interrupted.",
    )
    parser.add_argument("prompt", nargs="*", help="the task; several words are joined by spaces")
    for name, field in Settings.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        default = field.default
        if isinstance(default, tuple):
            default = ",".join(default)
        shown = "unset" if default is None else default
        parser.add_argument(
            flag_name(name),
            dest=name,
            metavar=name.split("_")[-1].upper(),
            help=f"{field.description} (env {env_name(name)}, default: {shown})",
        )
    parser.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="load the text of PATH into variable NAME of the agent's kernel (repeatable); "
        "the prompt lists its name, type and size, not its content",
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
        help='print one JSON object on stdout: {"result", "error", "session", "usage"}',
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
        help="continue an earlier session (id or unique prefix) in a fresh kernel; its "
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
    from rlm.cli.live import LiveView
    from rlm.cli.progress import LineProgress

    callbacks: list[Any] = []
    live = None
    if args.events:
        callbacks.append(
            lambda e: print(json.dumps(e.as_dict(), default=str), file=sys.stderr, flush=True)
        )
    elif not args.quiet:
        if sys.stderr.isatty():
            live = LiveView()
            callbacks.append(live)
        else:
            callbacks.append(LineProgress())

    def fan_out(event: Event) -> None:
        for callback in callbacks:
            callback(event)

    return (fan_out if callbacks else None), live


def _session_factory(args: argparse.Namespace, settings: Settings, on_event: Any) -> Any:
    from rlm.runtime.session import Session, load_context_file

    context = load_context_file(args.context) if args.context else None
    _read_inputs(args.input, settings.max_input_bytes, read=False)  # bad input: exit 2 now

    def make() -> Session:
        # Read again for each session, so this closure holds no copy for the whole run.
        inputs = _read_inputs(args.input, settings.max_input_bytes)
        return Session(
            settings=settings, on_event=on_event, context=context, resume=args.resume, inputs=inputs
        )

    return make


async def _run_task(args: argparse.Namespace, settings: Settings, task: str) -> int:
    on_event, live = _observers(args)
    make_session = _session_factory(args, settings, on_event)
    result = error = None
    usage: dict[str, int] = {}
    path = ""
    if live is not None:
        live.start()
    try:
        async with make_session() as session:
            path = str(session.path)
            try:
                result = await session.send(task)
            except AgentError as exc:
                error = str(exc)
            usage = session.usage.as_dict()
    finally:
        if live is not None:
            live.stop()
    if args.json:
        record = {"result": result, "error": error, "session": path, "usage": usage}
        print(json.dumps(record, ensure_ascii=False), flush=True)
    elif result is not None:
        print(result, flush=True)
    if error is not None:
        if not args.json:
            print(f"rlm: {error}", file=sys.stderr)
        return 1
    return 0


def _print_system_prompt(args: argparse.Namespace, settings: Settings) -> int:
    """The prompt a root agent would get; skills are listed as installed (a real run lists
    only those that import in its kernel)."""
    from rlm.agent.prompt import InputInfo, PromptParts, render_system_prompt
    from rlm.control.inputs import pack_inputs
    from rlm.skills import discovery as skills

    infos, _ = pack_inputs(_read_inputs(args.input, settings.max_input_bytes))
    parts = PromptParts(
        cwd=Path.cwd().resolve(),
        skills=skills.prompt_section(skills.discover(), {}),
        inputs=[InputInfo(**info) for info in infos],
    )
    print(render_system_prompt(settings, parts), end="")
    return 0


def _interactive(args: argparse.Namespace, settings: Settings) -> int:
    from rlm.cli.interactive import run_interactive

    on_event, live = _observers(args)
    make_session = _session_factory(args, settings, on_event)

    def show(answer: str) -> None:
        if args.json:
            print(json.dumps({"result": answer}, ensure_ascii=False), flush=True)
        else:
            print(answer, flush=True)

    return run_interactive(
        make_session,
        show=show,
        before_turn=live.start if live else (lambda: None),
        after_turn=live.stop if live else (lambda: None),
    )


def _run_async(coro: Any) -> int:
    """Run the CLI's coroutine; SIGTERM cancels it like Ctrl-C so kernels are shut down."""

    async def guarded() -> int:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        got: list[int] = []

        def stop(signum: int) -> None:
            got.append(signum)
            if task is not None:
                task.cancel()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        try:
            return await coro
        except asyncio.CancelledError:
            return 128 + (got[0] if got else signal.SIGINT)

    return asyncio.run(guarded())


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
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {
        name: getattr(args, name) for name in Settings.model_fields if name not in _NOT_FLAGS
    }
    try:
        settings = load_settings(**overrides)
        if args.print_system_prompt:
            return _print_system_prompt(args, settings)
        if not args.prompt:
            return _interactive(args, settings)
        return _run_async(_run_task(args, settings, " ".join(args.prompt)))
    except ConfigError as exc:
        print(f"rlm: {exc}", file=sys.stderr)
        return 2
    except RLMError as exc:
        print(f"rlm: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
