"""``rlm eval``: long-context tasks generated and scored locally, run by several methods.

The families (:mod:`rlm.eval.families`, :mod:`rlm.eval.codegen`) are generated from a seed,
so a run needs no download and two runs see the same tasks byte for byte; the loaders of
:mod:`rlm.eval.datasets` read the official OOLONG and LongBench-v2 files when a user has them.
Methods (:mod:`rlm.eval.methods`) answer a task through the normal session machinery, so every
task leaves a session in ``$RLM_HOME/sessions`` tagged with its ``eval`` record. The runner
(:mod:`rlm.eval.runner`) appends one result line per task to a resumable JSONL file, and
:mod:`rlm.eval.report` turns those lines into the table. Orchestrator side: it imports the
runtime, never the other way round.
"""
