"""Recognising tool calls written as text, and context-overflow errors, in the shapes servers
send them (pure functions; the runs through rlm are in test_servers.py)."""

from __future__ import annotations

import json

import pytest

from rlm.agent.overflow import overflow_detail
from rlm.agent.textcalls import find_text_calls

TOOLS = {"ipython", "bash"}


def calls_of(content: str) -> list[tuple[str, dict]]:
    found = find_text_calls(content, TOOLS)
    assert found is not None, content
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in found.calls]


def test_hermes_blocks_several_with_text_around_and_an_unclosed_last():
    content = (
        "Let me check.\n<tool_call>\n"
        '{"name": "ipython", "arguments": {"code": "import os\nprint(1)"}}\n</tool_call>\n'
        '<tool_call>{"name": "bash", "arguments": {"command": "ls"}}'
    )
    assert calls_of(content) == [
        ("ipython", {"code": "import os\nprint(1)"}),
        ("bash", {"command": "ls"}),
    ]
    found = find_text_calls(content, TOOLS)
    assert found is not None and found.content == "Let me check."
    assert len({c["id"] for c in found.calls}) == 2


def test_mistral_bare_and_fenced_forms_and_parameters_and_string_arguments():
    assert calls_of('[TOOL_CALLS] [{"name": "bash", "arguments": {"command": "ls"}}]') == [
        ("bash", {"command": "ls"})
    ]
    assert calls_of('{"name": "ipython", "parameters": {"code": "1"}}') == [
        ("ipython", {"code": "1"})
    ]
    fenced = '```\n{"name": "ipython", "arguments": "{\\"code\\": \\"2\\"}"}\n```'
    assert calls_of(fenced) == [("ipython", {"code": "2"})]


@pytest.mark.parametrize(
    "content",
    [
        "The answer is 42.",
        '{"name": "web", "arguments": {}}',  # not an offered tool
        '<tool_call>\n{"name": "ipython", "arguments": {"code": "pri',  # cut mid-call
        '{"name": "ipython", "arguments": {"code": "1"}} and then some prose',
        '```json\n{"name": "ipython", "arguments": [1]}\n```',  # arguments not an object
        'Example: ```json\n{"a": 1}\n```',
    ],
)
def test_answers_and_broken_calls_stay_text(content):
    assert find_text_calls(content, TOOLS) is None


def test_no_tools_offered_means_no_calls():
    assert find_text_calls('{"name": "ipython", "arguments": {}}', set()) is None


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            400,
            '{"error":{"code":400,"message":"request (5668 tokens) exceeds the available context '
            'size (4096 tokens), try increasing it","type":"exceed_context_size_error",'
            '"n_prompt_tokens":5668,"n_ctx":4096}}',
            "context full (5,668 > 4,096 tokens): /reset, or --input for big text",
        ),
        (  # vLLM
            400,
            '{"object":"error","message":"This model\'s maximum context length is 4096 tokens. '
            "However, you requested 5668 tokens (5604 in the messages, 64 in the completion). "
            'Please reduce the length of the messages or completion.","type":"BadRequestError",'
            '"param":null,"code":400}',
            "context full (5,668 > 4,096 tokens): /reset, or --input for big text",
        ),
        (  # llama-cpp-python
            400,
            '{"error":{"message":"Requested tokens (5668) exceed context window of 4096",'
            '"type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}',
            "context full (5,668 > 4,096 tokens): /reset, or --input for big text",
        ),
        (
            400,
            '{"error":{"message":"too long","code":"context_length_exceeded"}}',
            "context full: /reset, or --input for big text",
        ),
        (400, '{"error":{"message":"model not found"}}', None),
        (404, '{"error":{"code":"context_length_exceeded"}}', None),
    ],
)
def test_overflow_shapes(status, body, expected):
    assert overflow_detail(status, body) == expected
