"""Tool calls a server returned as text instead of structured ``tool_calls``.

A server without a tool-call parser (llama-server with a model's own chat template, Ollama
models without a tool template, vLLM without ``--tool-call-parser``) passes the model's
tool-call syntax through as ``content``. Printed as a final answer, the run would end at the
first call. The common text forms are recognised here and turned into structured calls:

* Hermes/Qwen blocks: ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` (one or
  more; the closing tag may be missing at the very end);
* a fenced JSON object (```` ```json {...} ``` ````) with ``name`` and ``arguments``;
* a reply that is nothing but such a JSON object (Llama 3 style, ``parameters`` accepted
  for ``arguments``);
* Mistral's ``[TOOL_CALLS] [{...}, ...]``.

Only names of offered tools count, so an answer that merely shows JSON is left alone.
Pure functions; the loop decides what to do with the result.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TextCalls", "find_text_calls"]

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|\Z)", re.DOTALL)
_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n(.*?)\n?```", re.DOTALL)
_MISTRAL = "[TOOL_CALLS]"
_decoder = json.JSONDecoder(strict=False)  # raw newlines in code strings are the normal case
_ids = itertools.count(1)


@dataclass
class TextCalls:
    """Calls found in a reply's text, in OpenAI's shape, and the text left around them."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    content: str = ""


def find_text_calls(content: str, tools: set[str]) -> TextCalls | None:
    """The tool calls written in ``content``, or None when it holds none of ``tools``.

    Every block of the recognised form must name an offered tool with object arguments;
    otherwise the reply is taken as text (a model explaining the syntax is not calling).
    """
    if not tools or not content:
        return None
    for finder in (_hermes, _mistral, _fenced, _bare):
        found = finder(content)
        if found is None:
            continue
        objects, rest = found
        calls = [_as_call(obj, tools) for obj in objects]
        if calls and all(c is not None for c in calls):
            return TextCalls([c for c in calls if c is not None], rest.strip())
    return None


def _hermes(content: str) -> tuple[list[Any], str] | None:
    if "<tool_call>" not in content:
        return None
    objects = [_json(match.group(1)) for match in _HERMES.finditer(content)]
    return objects, _HERMES.sub("", content)


def _mistral(content: str) -> tuple[list[Any], str] | None:
    before, marker, after = content.partition(_MISTRAL)
    if not marker:
        return None
    value = _json(after)
    objects = value if isinstance(value, list) else [value]
    return objects, before


def _fenced(content: str) -> tuple[list[Any], str] | None:
    matches = list(_FENCE.finditer(content))
    if not matches:
        return None
    objects = [_json(match.group(1)) for match in matches]
    return objects, _FENCE.sub("", content)


def _bare(content: str) -> tuple[list[Any], str] | None:
    text = content.strip()
    if not text.startswith("{"):
        return None
    try:
        value, end = _decoder.raw_decode(text)
    except json.JSONDecodeError:
        return None
    return ([value], "") if not text[end:].strip() else None


def _json(text: str) -> Any:
    """The JSON value at the start of ``text`` (trailing text ignored), or None."""
    text = text.strip()
    try:
        return _decoder.raw_decode(text)[0]
    except json.JSONDecodeError:
        return None


def _as_call(obj: Any, tools: set[str]) -> dict[str, Any] | None:
    if not isinstance(obj, dict) or obj.get("name") not in tools:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = _decoder.decode(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {
        "id": f"call_text_{next(_ids)}",
        "type": "function",
        "function": {"name": obj["name"], "arguments": json.dumps(arguments)},
    }
