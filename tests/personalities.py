"""Server personalities for the scripted model: what real OpenAI-compatible servers do.

Each rule reproduces a behaviour seen from a real server in a trial (issue 14), with the
status and body that server sent, so a test through rlm fails the way a user's run did.
Set one with ``model.personality = LLAMA_SERVER`` (see ``ScriptedModel``); a refusal is
answered before the script is consulted and consumes no scripted step.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "LLAMA_CPP_PYTHON",
    "LLAMA_SERVER",
    "STRICT_TEMPLATE",
    "VLLM",
    "Personality",
    "prompt_tokens",
]


def prompt_tokens(body: dict[str, Any]) -> int:
    """The scripted model's token estimate of a request: characters of contents // 4."""
    total = 0
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        total += len(content) if isinstance(content, str) else 0
    return max(1, total // 4)


@dataclass(frozen=True)
class Personality:
    """Rules a server applies to every request, before it generates anything."""

    name: str = "openai"
    reparses_arguments: bool = False
    """Historical tool-call ``arguments`` are parsed again, strictly (llama-server with a
    tools template, vLLM and SGLang templates): 500 when one is not JSON."""
    rejects_null_content: bool = False
    """An assistant message whose ``content`` is null or missing is refused with 500
    (llama-cpp-python's pydantic request model)."""
    needs_tool_choice: bool = False
    """Tools are rendered only when ``tool_choice`` is sent (llama-cpp-python's chat
    formats); without it the model never sees them and answers in text."""
    strict_roles: bool = False
    """The chat template insists on user/assistant alternation and on assistant messages
    with text or tool calls (Mistral-style templates): 400 otherwise."""
    context_window: int | None = None
    """Tokens the server's context holds; a larger prompt gets the overflow 400."""
    overflow: Literal["openai", "llama-server"] = "openai"
    """The shape of that 400: OpenAI/vLLM/llama-cpp-python or llama-server."""

    def refuse(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """(status, JSON body) of the error this server answers ``body`` with, or None."""
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        for check in (self._arguments, self._null_content, self._roles):
            refusal = check(messages)
            if refusal is not None:
                return refusal
        return self._overflow(body)

    def hides_tools(self, body: dict[str, Any]) -> bool:
        """Whether the model does not see the request's tools (so it cannot call them)."""
        return self.needs_tool_choice and "tool_choice" not in body

    def _arguments(self, messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
        if not self.reparses_arguments:
            return None
        for message in messages:
            for call in message.get("tool_calls") or []:
                arguments = (call.get("function") or {}).get("arguments")
                try:
                    json.loads(arguments)  # strict, as nlohmann::json and Python templates
                except (TypeError, json.JSONDecodeError) as exc:
                    text = f"Failed to parse tool call arguments as JSON: {exc}"
                    return 500, {"error": {"code": 500, "message": text, "type": "server_error"}}
        return None

    def _null_content(self, messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
        if not self.rejects_null_content:
            return None
        for index, message in enumerate(messages):
            if message.get("role") == "assistant" and not isinstance(message.get("content"), str):
                detail = [
                    {
                        "type": "string_type",
                        "loc": ["body", "messages", index, "typed-dict", "content"],
                        "msg": "Input should be a valid string",
                        "input": message.get("content"),
                    }
                ]
                return 500, {"error": {"message": json.dumps(detail), "type": "internal_error"}}
        return None

    def _roles(self, messages: list[dict[str, Any]]) -> tuple[int, dict[str, Any]] | None:
        if not self.strict_roles:
            return None
        previous = None
        for message in messages:
            role = message.get("role")
            if role == "assistant" and not message.get("content") and not message.get("tool_calls"):
                text = "Assistant message must have either content or tool_calls"
                return 400, {"object": "error", "message": text, "type": "BadRequestError"}
            if role == "user" and previous == "user":
                text = "Conversation roles must alternate user/assistant/user/assistant/..."
                return 400, {"object": "error", "message": text, "type": "BadRequestError"}
            if role != "system":
                previous = role
        return None

    def _overflow(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        window = self.context_window
        tokens = prompt_tokens(body)
        if window is None or tokens <= window:
            return None
        if self.overflow == "llama-server":
            text = (
                f"request ({tokens} tokens) exceeds the available context size "
                f"({window} tokens), try increasing it"
            )
            error = {
                "code": 400,
                "message": text,
                "type": "exceed_context_size_error",
                "n_prompt_tokens": tokens,
                "n_ctx": window,
            }
            return 400, {"error": error}
        text = (
            f"This model's maximum context length is {window} tokens. However, your messages "
            f"resulted in {tokens} tokens. Please reduce the length of the messages."
        )
        error = {
            "message": text,
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
        return 400, {"error": error}


#: llama.cpp's llama-server with ``--jinja`` and a tools template.
LLAMA_SERVER = Personality("llama-server", reparses_arguments=True, overflow="llama-server")
#: llama-cpp-python's server with a function-calling chat format.
LLAMA_CPP_PYTHON = Personality(
    "llama-cpp-python", rejects_null_content=True, needs_tool_choice=True
)
#: vLLM with ``--enable-auto-tool-choice --tool-call-parser``.
VLLM = Personality("vllm", reparses_arguments=True)
#: A server whose chat template enforces strict role alternation (e.g. Mistral's).
STRICT_TEMPLATE = Personality("strict-template", strict_roles=True)
