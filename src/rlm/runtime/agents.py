"""Constructors of the three kinds of agent: a root, a child and a root resumed from its log.

Each creates (or reopens) the agent's session folder with its first ``meta.json`` and hands
the agent everything it starts with, so no code writes an agent's fields from outside.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from rlm.agent.context import rebuild_context
from rlm.agent.host import AgentHost
from rlm.agent.loop import MAX_INLINE_TASK, Agent, ResumedState
from rlm.agent.model import Usage
from rlm.config import Settings
from rlm.control.inputs import Packed
from rlm.errors import ConfigError
from rlm.logs.writer import SessionLog, clean_text, new_session_id
from rlm.runtime.metrics import attach
from rlm.schema.meta import AgentMeta

__all__ = ["initial_meta", "new_child", "new_root", "resume_root"]


def initial_meta(
    agent_id: str,
    settings: Settings,
    task: str,
    *,
    cwd: Path,
    depth: int,
    parent: str | None,
) -> AgentMeta:
    """The first ``meta.json`` of an agent (``SessionLog`` adds status and times)."""
    return AgentMeta(
        id=agent_id,
        parent=parent,
        depth=depth,
        model=settings.model,
        task=clean_text(task)[:MAX_INLINE_TASK],
        cwd=str(cwd),
        pid=os.getpid(),
        settings=settings.model_dump(mode="json", exclude={"api_key", "base_url", "home", "kernel_gateway_token"}),
    )


def new_root(
    host: AgentHost,
    settings: Settings,
    sessions: Path,
    task: str,
    *,
    inputs: Packed | None = None,
    context: list[dict[str, Any]] | None = None,
) -> Agent:
    """A root agent in a new session folder under ``sessions``."""
    session_id = new_session_id()
    meta = initial_meta(session_id, settings, task, cwd=host.cwd, depth=0, parent=None)
    log = SessionLog(sessions / session_id, meta)
    agent = Agent(
        host, settings, task, log=log, agent_id=session_id, inputs=inputs, context=context
    )
    return attach(agent)


def new_child(
    host: AgentHost, parent: Agent, settings: Settings, task: str, inputs: Packed
) -> Agent:
    """A sub-agent in a new ``sub-<hex>`` folder inside its parent's."""
    while True:
        name = f"sub-{secrets.token_hex(3)}"
        if not (parent.log.path / name).exists():
            break
    agent_id = f"{parent.id}/{name}"
    meta = initial_meta(
        agent_id, settings, task, cwd=host.cwd, depth=parent.depth + 1, parent=parent.id
    )
    log = SessionLog(parent.log.path / name, meta)
    agent = Agent(host, settings, task, log=log, agent_id=agent_id, parent=parent, inputs=inputs)
    return attach(agent)


def resume_root(host: AgentHost, settings: Settings, folder: Path) -> Agent:
    """The root agent of an earlier session, its live context rebuilt from the log."""
    try:
        log, lines = SessionLog.reopen(folder)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: cannot read {folder}: {exc}") from None
    meta = log.meta
    state = ResumedState(
        context=rebuild_context(lines, settings.max_turns_in_context),
        children=[entry.to_json() for entry in meta.children],
        usage=Usage(*meta.usage.pair()),
        usage_total=Usage(*meta.usage_total.pair()),
    )
    log.event("resumed")
    agent = Agent(host, settings, meta.task or "", log=log, agent_id=folder.name, resumed=state)
    return attach(agent)
