"""Kernels through a loopback Jupyter Kernel Gateway next to local fork start:
``uv run python -m bench --only-gateway``.

The same scenarios as the main benchmark (:mod:`bench.run`), run twice: with local forked
kernels, and with ``RLM_KERNEL_GATEWAY`` pointing at a Kernel Gateway started here on
127.0.0.1 (with a token). Spawn latency is the time from a cell's ``rlm.run`` to the child's
first cell having run; the fan-out is one cell gathering N children that each run one cell.
The gateway starts every kernel cold (a new Python process per kernel, no zygote, no pool), so
the difference is mostly that, plus the REST and websocket round trips.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.run import Bench, Stat, ms, row, secs, spread, table
from scripted_model import ScriptedModel

__all__ = ["gateway_scenario"]


class _GatewayBench(Bench):
    """:class:`Bench` whose runs start every kernel on the gateway at ``url``."""

    def __init__(self, quick: bool, url: str, token: str) -> None:
        super().__init__(quick)
        self.url, self.token = url, token

    def env(self, model: ScriptedModel, **settings: Any) -> dict[str, str]:
        env = super().env(model, **settings)
        env.update(RLM_KERNEL_GATEWAY=self.url, RLM_KERNEL_GATEWAY_TOKEN=self.token)
        return env


@contextlib.contextmanager
def kernel_gateway(cwd: Path) -> Iterator[tuple[str, str]]:
    """A Kernel Gateway on a free loopback port with a random token: ``(url, token)``."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    token = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RLM_", "OPENAI_"))}
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "jupyter", "kernelgateway", "--ip=127.0.0.1",
            f"--port={port}", f"--KernelGatewayApp.auth_token={token}",
        ],
        cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the kernel gateway did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}", token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gateway_scenario(quick: bool, fan_out: int = 50) -> list[str]:
    """Measure local fork start and the loopback gateway; the report's lines."""
    spawns = 5 if quick else 20
    local = Bench(quick)
    results: dict[str, dict[str, Any]] = {}
    results["local fork"] = {
        "spawn": local.spawn_latency("fork", spawns)[0],
        "fan": local.fan_out(fan_out, "fork")["wall"],
    }
    with kernel_gateway(local.scratch) as (url, token):
        remote = _GatewayBench(quick, url, token)
        results["loopback gateway"] = {
            "spawn": remote.spawn_latency("cold", spawns)[0],
            "fan": remote.fan_out(fan_out, "cold")["wall"],
        }
    lines = ["", "### Kernels through a loopback Kernel Gateway vs local fork start"]
    lines += table(
        "kernels", f"spawn latency, median (min–max) of {spawns}", f"fan-out of {fan_out}"
    )
    for name, figures in results.items():
        spawn: Stat = figures["spawn"]
        lines.append(row(name, spread(spawn, ms), secs(figures["fan"])))
    return lines
