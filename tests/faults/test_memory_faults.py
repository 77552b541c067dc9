"""Memory faults: a kernel or a cell that tries to exhaust the orchestrator's memory.

The orchestrator owns every agent, log and budget of a run; whatever a cell does, it is the
kernel that must pay (or die), never the orchestrator.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from faultkit import check_logs, tool_results

from rlm.config import load_settings
from rlm.runtime.orchestrator import Orchestrator
from scripted_model import ipython, reply

OOM_READ = "print(open('/proc/self/oom_score_adj').read().strip())"


async def run_root(task: str, **settings) -> str:
    """A root agent on an in-process orchestrator (so the test can measure it); kernels must
    not see PYTEST_CURRENT_TEST (ipykernel then stops capturing fd-level output)."""
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    async with Orchestrator(load_settings(**settings)) as orchestrator:
        return await orchestrator.run(task)


# -- the OOM killer picks a kernel -----------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "pool"), [("cold", 0), ("fork", 0), ("fork", 2)], ids=["cold", "forked", "pooled"]
)
async def test_kernels_are_the_oom_killers_first_choice(model, rlm_env, start, pool):
    """Every kernel (root and sub-agent; cold, forked and pooled) runs with an
    ``oom_score_adj`` 500 above the orchestrator's, so running out of memory kills a kernel."""
    own = int(Path("/proc/self/oom_score_adj").read_text())
    model.script(
        reply(None, ipython(OOM_READ + "\nprint(await rlm.run('child: report'))")),
        reply("root done"),
        match="root",
    )
    model.script(reply(None, ipython(OOM_READ)), reply("child done"), match="child:")
    answer = await run_root("root task", max_depth=1, kernel_start=start, kernel_pool=pool)
    assert answer == "root done"
    expected = str(min(own + 500, 1000))
    assert tool_results(model.requests_for("root")) == [f"{expected}\nchild done"]
    assert tool_results(model.requests_for("child:")) == [expected]
    assert int(Path("/proc/self/oom_score_adj").read_text()) == own
    check_logs(rlm_env)
