"""rlm's benchmark suite: ``uv run python -m bench`` (see bench/run.py)."""
