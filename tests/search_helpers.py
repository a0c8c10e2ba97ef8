"""Shared fixtures for the search tests: a hand-built LinearHead and a tiny text embedder.

``hash_embed`` is a test double for the sentence encoder + prompt PCA: a signed hashed bag of words
projected to d_T dimensions. Unit tests cannot load the real encoder in under a second; the search
only needs *some* fixed map from text to T, and this one makes edits move T.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

from cpo_engine.causal.head import LinearHead

D_T = 4
_PROJ = np.random.default_rng(123).normal(size=(64, D_T)) / 4.0


def hash_embed(texts: Sequence[str]) -> np.ndarray:
    out = np.zeros((len(texts), 64))
    for i, text in enumerate(texts):
        for w in re.findall(r"[a-z']+", text.lower()):
            h = int.from_bytes(hashlib.md5(w.encode()).digest()[:4], "little")
            out[i, h % 64] += 1.0 if (h >> 8) & 1 else -1.0
        out[i] /= max(1.0, np.sqrt(len(text.split())))
    return out @ _PROJ


def make_head(d_x: int = 2, seed: int = 0, noise: float = 0.02) -> LinearHead:
    rng = np.random.default_rng(seed)
    d_phi = d_x + 1
    a = rng.normal(size=(d_phi * D_T, d_phi * D_T)) * noise
    return LinearHead(coef=rng.normal(size=(d_phi, D_T)) * 0.2, cov=a @ a.T,
                      featurize=lambda X: np.hstack([np.ones((len(X), 1)), np.asarray(X)]),
                      t_ref=np.zeros(D_T))


SEEDS = [
    "The answer is:",
    "Let's think step by step.",
    "Solve the problem. Follow these instructions exactly. The answer is:",
    "You are a helpful assistant. Break the problem into parts and answer each part.",
]
