"""openrlm's CLI pointed at the benchmark's model server: its OpenRouter SDK takes the base URL
from a module table, not from an option or the environment."""

import os
import sys

import openrouter.sdkconfiguration as sdk  # type: ignore[import-not-found]

sdk.SERVERS[sdk.SERVER_PRODUCTION] = os.environ["BENCH_BASE_URL"]

from openrlm.cli import main  # type: ignore[import-not-found]  # noqa: E402

sys.argv = ["openrlm", *sys.argv[1:]]
main()
