"""Evaluation in embedding space: prompt sets, metrics, methods side by side, reports.

``python -m embedding_sanitizer evaluate`` (``commands/evaluate.py``) drives
``runner.run_evaluation``; ``python -m embedding_sanitizer bench``
(``commands/bench.py``) drives ``bench.run_bench``. Definitions follow
``../shared/research/baselines.md`` so that the numbers are comparable with the
baselines measured there on the bundled encoder.
"""
