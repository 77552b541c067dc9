"""The environment model-written code runs with: the user's, minus model credentials.

Kernels and the ``bash`` tool both run code the model wrote, so neither gets the API key
(the orchestrator holds it and makes every model call itself).
"""

from __future__ import annotations

import os
import re

__all__ = ["CREDENTIAL_DENY_LIST", "kernel_environment"]

#: Environment variables never passed to a kernel (plus every name ending in ``_API_KEY``).
CREDENTIAL_DENY_LIST: frozenset[str] = frozenset(
    {
        "RLM_API_KEY",
        "OPENAI_API_KEY",
        "OPENAI_ORG_ID",
        "ANTHROPIC_API_KEY",
        "AZURE_OPENAI_API_KEY",
        "OPENROUTER_API_KEY",
        "GEMINI_API_KEY",
        "GOOGLE_API_KEY",
        "MISTRAL_API_KEY",
        "GROQ_API_KEY",
        "TOGETHER_API_KEY",
        "DEEPSEEK_API_KEY",
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
    }
)
_API_KEY_NAME = re.compile(r".*_API_KEY$", re.IGNORECASE)


def kernel_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a kernel inherits: the user's, without model credentials."""
    source = os.environ if environ is None else environ
    return {
        key: value
        for key, value in source.items()
        if key not in CREDENTIAL_DENY_LIST and not _API_KEY_NAME.match(key)
    }
