"""The environment model-written code runs with: the user's, minus credentials.

Kernels and the ``bash`` tool both run code the model wrote, so neither gets the API key
(the orchestrator holds it and makes every model call itself), nor anything else that looks
like a credential: the named variables below, any name ending in ``_API_KEY``, ``_TOKEN``,
``_SECRET``, ``_PASSWORD``, ``_KEY_ID`` or ``_ACCESS_KEY`` (optionally followed by ``_2``,
``_3``...), and the model endpoint (``RLM_BASE_URL``, ``OPENAI_BASE_URL``: a URL may carry a
password or an ``?api-key=``).

Two variables (read from the same environment) change the filter:

- ``RLM_KERNEL_ENV_ALLOW``: comma-separated names or globs (``AWS_*``) passed through even
  if they look like credentials, for code that really needs them; rlm's own model key and
  endpoint (:data:`MODEL_CREDENTIALS`) pass only when named exactly, never by a glob;
- ``RLM_KERNEL_ENV=minimal``: ``env -i`` semantics, only a few basic variables (``PATH``,
  ``HOME``, locale, terminal, Python and virtualenv paths, ``RLM_*`` settings) plus the
  allow-list reach a kernel.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Mapping

from rlm.errors import ConfigError

__all__ = [
    "CREDENTIAL_DENY_LIST",
    "MINIMAL_ENV",
    "MODEL_CREDENTIALS",
    "check_kernel_env",
    "is_credential",
    "kernel_environment",
]

#: What rlm itself reads to reach the model: a glob in the allow-list never passes these.
MODEL_CREDENTIALS = frozenset({"RLM_API_KEY", "OPENAI_API_KEY", "RLM_BASE_URL", "OPENAI_BASE_URL"})

#: Environment variables never passed to a kernel (plus every name :func:`is_credential`
#: matches by its suffix).
CREDENTIAL_DENY_LIST: frozenset[str] = frozenset(
    {
        "RLM_API_KEY",
        "RLM_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_API_KEY_2",
        "OPENAI_ADMIN_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_ORG_ID",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_AD_TOKEN",
        "OPENROUTER_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "MISTRAL_API_KEY",
        "GROQ_API_KEY",
        "TOGETHER_API_KEY",
        "DEEPSEEK_API_KEY",
        "HF_TOKEN",
        "HF_API_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HUGGINGFACEHUB_API_TOKEN",
        "LITELLM_MASTER_KEY",
        "AWS_BEARER_TOKEN_BEDROCK",
    }
)
_CREDENTIAL_NAME = re.compile(
    r".*_(API_KEY|TOKEN|SECRET|PASSWORD|KEY_ID|ACCESS_KEY)(_\d+)?$", re.IGNORECASE
)
#: What ``RLM_KERNEL_ENV=minimal`` keeps (names or globs), before the allow-list.
MINIMAL_ENV: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TMPDIR", "TZ", "LANG", "LANGUAGE",
    "LC_*", "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "RLM_*",
)  # fmt: skip


def is_credential(name: str) -> bool:
    """True for a variable no kernel gets unless allowed (see the module docstring)."""
    return name.upper() in CREDENTIAL_DENY_LIST or bool(_CREDENTIAL_NAME.match(name))


def _matches(name: str, patterns: list[str] | tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _allowed(name: str, allow: list[str]) -> bool:
    if name in MODEL_CREDENTIALS:
        return name in allow
    return _matches(name, allow)


def check_kernel_env(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` (one line) for an ``RLM_KERNEL_ENV`` rlm does not know."""
    source = os.environ if environ is None else environ
    value = source.get("RLM_KERNEL_ENV", "").strip().lower()
    if value not in ("", "inherit", "minimal"):
        raise ConfigError(
            f"RLM_KERNEL_ENV: expected 'inherit' or 'minimal' (got {source['RLM_KERNEL_ENV']!r})"
        )


def kernel_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a kernel (or the bash tool) inherits: the user's, without credentials,
    shaped by ``RLM_KERNEL_ENV_ALLOW`` and ``RLM_KERNEL_ENV`` read from that environment."""
    source = os.environ if environ is None else environ
    allow = [p.strip() for p in source.get("RLM_KERNEL_ENV_ALLOW", "").split(",") if p.strip()]
    minimal = source.get("RLM_KERNEL_ENV", "").strip().lower() == "minimal"
    env = {}
    for key, value in source.items():
        if _allowed(key, allow):
            env[key] = value
        elif is_credential(key) or (minimal and not _matches(key, MINIMAL_ENV)):
            continue
        else:
            env[key] = value
    env["PATH"] = _python_first(env.get("PATH", ""))
    return env


def _python_first(path: str) -> str:
    """``path`` with the folder of rlm's Python first: kernels run in that Python, so
    ``!pip install X`` and ``!python`` in a cell (and the bash tool) mean the kernel's own
    environment, not whatever pip is first on the user's PATH (a uv tool environment's
    folder is never on it)."""
    folder = os.path.dirname(sys.executable)
    return os.pathsep.join([folder, *(p for p in path.split(os.pathsep) if p and p != folder)])
