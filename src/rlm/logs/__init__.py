"""Reading, rendering and exporting session logs (``rlm sessions ...``).

Read-only: nothing here writes below ``$RLM_HOME``. Modules: ``store`` (folders, meta,
log lines, ids), ``replay`` (calls and results, sub-agent matching, live-context rebuild),
``prices``, ``render`` (rich output), ``export_ipynb`` and ``export_train``.
"""

from __future__ import annotations

from rlm.logs.store import AgentNode, SessionError, default_home, find_session, list_sessions

__all__ = ["AgentNode", "SessionError", "default_home", "find_session", "list_sessions"]
