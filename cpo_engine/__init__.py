"""cpo_engine: a batch engine for Causal Prompt Optimization (arXiv 2602.01711).

Stages: triplet data -> representations (embeddings + PCA) -> causal reward model (cross-fitted
DML) -> offline-guided batched search; generation builds triplets with LLMs, edit analysis explains
which prompt edits help on which task. Orchestration lives in :mod:`cpo_engine.workflows`.

Importing the package sets no environment variable: the CLI and the Ray Jobs entrypoints set the
offline and threading defaults for their own process (:func:`cpo_engine.utils.process_defaults`).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
