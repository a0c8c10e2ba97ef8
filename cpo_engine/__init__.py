"""cpo_engine: a batch engine for Causal Prompt Optimization (arXiv 2602.01711).

Stages: triplet data -> representations (embeddings + PCA) -> causal reward model (cross-fitted
DML) -> offline-guided batched search; generation builds triplets with LLMs, edit analysis explains
which prompt edits help on which task.
"""

from __future__ import annotations

import os

# torch, LightGBM and scikit-learn each bring an OpenMP runtime; spinning waiters of one starve the
# others on small machines (a 0.7 s LightGBM fit took 10.5 s beside torch). Users may override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"

__all__ = ["__version__"]
