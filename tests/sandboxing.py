"""Helpers for tests that run ``rlm`` as another user and under a sandbox: the whole run as
root or as ``nobody`` (via ``setpriv`` when the tests run as root, else the current user),
with a Python that user can run and this checkout on its path."""

from __future__ import annotations

import json
import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import rlm
from scripted_model import ScriptedModel

__all__ = [
    "command", "interpreter", "probe", "python_path", "run_rlm", "scratch", "tool_texts", "users",
]  # fmt: skip

#: Imports what a run needs and starts the interpreter again, as a kernel start does.
CAN_START_KERNELS = (
    "import subprocess, sys, rlm, ipykernel, zmq, pydantic_core\n"
    "subprocess.run([sys.executable, '-c', 'import ipykernel'], check=True)\n"
)


def python_path() -> str:
    """``PYTHONPATH`` for a run as another user: this checkout and the site-packages."""
    source = str(Path(rlm.__file__).resolve().parents[1])
    return os.pathsep.join([source, *site.getsitepackages()])


def command(user: str, python: str) -> list[str]:
    """The start of a command line that runs ``python`` as ``user`` (root or nobody)."""
    if user == "root" or os.geteuid() != 0:
        return [python]
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", python]


def users() -> list[str]:
    """root and nobody when the tests run as root, else only the current (unprivileged) user."""
    unprivileged = "nobody" if os.geteuid() == 0 else "unprivileged"
    return ["root", unprivileged] if os.geteuid() == 0 else [unprivileged]


def interpreter(user: str, scratch: Path) -> str:
    """A Python the user can run with this checkout on ``PYTHONPATH``: the current one, or
    the system's of the same version (the current one may live under ``/root``)."""
    if user == "nobody" and shutil.which("setpriv") is None:
        pytest.skip("setpriv is needed to run as nobody")
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin")):
        if python is None:
            continue
        check = subprocess.run(
            [*command(user, python), "-c", CAN_START_KERNELS],
            env={
                "PATH": os.environ.get("PATH", ""),
                "PYTHONPATH": python_path(),
                "HOME": str(scratch),
            },
            capture_output=True,
        )
        if check.returncode == 0:
            return python
    pytest.skip(f"no Python with rlm's dependencies that {user} can run")


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A directory the run's user owns (``tmp_path`` is inside root's private folder)."""
    path = Path(tempfile.mkdtemp(prefix="rlm-unpriv-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def tool_texts(model: ScriptedModel, match: str) -> list[str]:
    """The tool results the agent ``match`` had seen at its last model request."""
    requests = model.requests_for(match)
    assert requests, f"no request for {match!r}"
    return [m["content"] for m in requests[-1]["messages"] if m["role"] == "tool"]


def probe(texts: list[str]) -> dict:
    """The one ``PROBE {json}`` line among ``texts``."""
    found = [json.loads(m.group(1)) for t in texts if (m := re.search(r"PROBE (\{.*\})", t))]
    assert len(found) == 1, texts
    return found[0]


def run_rlm(user: str, python: str, task: str, *, cwd: Path, env: dict[str, str]) -> str:
    """``rlm TASK`` as ``user``; checks it succeeded with the final answer ``done`` and
    returns its stderr (where the start notice is)."""
    result = subprocess.run(
        [*command(user, python), "-m", "rlm", task],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "done"
    return result.stderr
