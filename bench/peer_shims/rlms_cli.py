"""A command line for ``rlms`` (the RLM paper's library has none): ``rlms_cli.py TASK`` runs one
root RLM with its in-process ``local`` environment against the benchmark's model server."""

import os
import sys

from rlm import RLM  # type: ignore[import-not-found]  # rlms' package, in its own venv

# A child RLM sees its task only in its REPL's `context`, so its requests do not say which
# child they are. Show the task as the child's root prompt too, so the scripted model can
# route each request by its first user message (a few more bytes per child request).
_completion = RLM.completion


def _routed(self, prompt, root_prompt=None):  # type: ignore[no-untyped-def]
    if root_prompt is None and isinstance(prompt, str):
        root_prompt = prompt
    return _completion(self, prompt, root_prompt=root_prompt)


RLM.completion = _routed

agent = RLM(
    backend="openai",
    backend_kwargs={
        "base_url": os.environ["BENCH_BASE_URL"],
        "api_key": "sk-bench",
        "model_name": "scripted",
    },
    environment="local",
    max_depth=2,
    max_iterations=60,
    max_concurrent_subcalls=int(os.environ.get("BENCH_CONCURRENCY", "64")),
)
print(agent.completion(sys.argv[1], root_prompt=sys.argv[1]).response)
