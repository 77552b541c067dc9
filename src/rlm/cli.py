"""The ``rlm`` command: ``rlm "task"`` prints the answer; progress goes to stderr.

Exit codes: 0 answer, 1 the run ended without one, 2 bad usage or configuration,
130 interrupted (SIGINT), 143 terminated (SIGTERM). Subcommands (``rlm sessions ...``,
``rlm skill ...``) are recognised only as the first word; ``rlm -- sessions`` runs the
prompt "sessions".
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from .config import Settings, env_name, flag_name, load_settings
from .errors import AgentError, ConfigError, RLMError

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
    return parser


def _read_inputs(specs: list[str]) -> dict[str, str]:
    inputs: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.isidentifier():
            raise ConfigError(
                f"--input: expected NAME=PATH with NAME a Python identifier (got {spec!r})"
            )
        try:
            inputs[name] = Path(path).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise ConfigError(f"--input: cannot read {path!r}: {exc.strerror or exc}") from None
    return inputs


async def _run_task(settings: Settings, task: str, inputs: dict[str, Any], quiet: bool) -> int:
    from .orchestrator import Orchestrator
    from .progress import LineProgress

    progress = None if quiet else LineProgress()
    async with Orchestrator(settings, on_event=progress) as orchestrator:
        try:
            answer = await orchestrator.run(task, inputs=inputs)
        except AgentError as exc:
            print(f"rlm: {exc}", file=sys.stderr)
            return 1
    print(answer, flush=True)
    return 0


def _print_system_prompt(settings: Settings) -> int:
    from .prompt import PromptParts, render_system_prompt

    print(render_system_prompt(settings, PromptParts(cwd=Path.cwd().resolve())), end="")
    return 0


def _interactive(settings: Settings, quiet: bool) -> int:
    """One task per line until EOF; a minimal loop until interactive sessions land."""
    code = 0
    tty = sys.stdin.isatty()
    while True:
        try:
            line = input("rlm> " if tty else "")
        except EOFError:
            return code
        if line.strip() in ("/exit", "/quit"):
            return code
        if line.strip():
            code = _run_async(_run_task(settings, line.strip(), {}, quiet))


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
    if argv and argv[0] == "skill":
        from .skill_command import main as skill_main

        return skill_main(argv[1:])
    if argv and argv[0] == "sessions":
        from .sessions_cli import main as sessions_main

        return sessions_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    overrides = {
        name: getattr(args, name) for name in Settings.model_fields if name not in _NOT_FLAGS
    }
    try:
        settings = load_settings(**overrides)
        if args.print_system_prompt:
            return _print_system_prompt(settings)
        inputs = _read_inputs(args.input)
        if not args.prompt:
            return _interactive(settings, args.quiet)
        return _run_async(_run_task(settings, " ".join(args.prompt), inputs, args.quiet))
    except ConfigError as exc:
        print(f"rlm: {exc}", file=sys.stderr)
        return 2
    except RLMError as exc:
        print(f"rlm: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
