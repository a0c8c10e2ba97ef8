"""Representation engine: offline encoder, cache behavior, torch PCA parity with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.decomposition import PCA

from cpo_engine.embedding import EmbeddingCache, TorchPCA, build_representations
from cpo_engine.exceptions import ConfigError, NotFittedError

TEXTS = ["Let's think step by step.", "The answer is:", "Three experts discuss the problem.", "What is 7 times 8?"]


def test_encoder_offline_deterministic_normalized(encoder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a = encoder.encode(TEXTS)
    b = encoder.encode(list(reversed(TEXTS)))[::-1]
    assert a.shape == (4, 384) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-5)
    # semantically close texts are closer than unrelated ones
    sims = a @ a.T
    assert sims[0, 2] > sims[0, 3]


def test_prefix_changes_embedding(encoder):
    plain, prefixed = encoder.encode(TEXTS[:1]), encoder.encode(TEXTS[:1], prefix="search_query: ")
    assert not np.allclose(plain, prefixed)


def test_cache_hits_and_misses(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path / "cache")
    first = cache.embed(encoder, TEXTS + TEXTS[:1])
    assert (cache.stats.hits, cache.stats.misses) == (0, 4)
    again = EmbeddingCache(tmp_path / "cache")  # a new process sees the shards on disk
    second = again.embed(encoder, TEXTS[1:] + ["A new text."])
    assert (again.stats.hits, again.stats.misses) == (3, 1)
    np.testing.assert_array_equal(first[1:4], second[:3])
    np.testing.assert_array_equal(first[0], first[4])
    # a different prefix is a different key
    again.embed(encoder, TEXTS[:1], prefix="query: ")
    assert again.stats.misses == 2
    assert len(list((tmp_path / "cache").rglob("shard-*.parquet"))) == 3
    assert not list((tmp_path / "cache").rglob("*.tmp"))


@pytest.mark.parametrize("n_components", [3, 0.8, None])
def test_pca_matches_sklearn_up_to_sign(n_components):
    rng = np.random.default_rng(0)
    Z = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12)) + rng.normal(size=12)
    ours = TorchPCA(n_components, device="cpu", batch_size=37).fit(Z)
    ref = PCA(n_components, svd_solver="full").fit(Z)
    assert ours.n_components_ == ref.n_components_
    signs = np.sign(np.sum(ours.components_ * ref.components_, axis=1))
    np.testing.assert_allclose(ours.components_ * signs[:, None], ref.components_, atol=1e-8)
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(ours.transform(Z) * signs, ref.transform(Z), atol=1e-8)


def test_pca_streaming_equals_in_memory():
    Z = np.random.default_rng(1).normal(size=(300, 8))
    a = TorchPCA(4, device="cpu").fit(Z)
    b = TorchPCA(4, device="cpu").fit(Z[i:i + 50] for i in range(0, 300, 50))
    np.testing.assert_allclose(a.components_, b.components_, atol=1e-10)


def test_pca_save_load_round_trip(tmp_path):
    Z = np.random.default_rng(2).normal(size=(50, 6))
    pca = TorchPCA(0.9, device="cpu").fit(Z)
    pca.save(tmp_path / "p.safetensors", metadata={"encoder": "minilm"})
    back = TorchPCA.load(tmp_path / "p.safetensors", device="cpu")
    np.testing.assert_array_equal(back.transform(Z), pca.transform(Z))
    assert back.metadata == {"encoder": "minilm"} and back.n_components == 0.9


def test_pca_errors(tmp_path):
    with pytest.raises(NotFittedError, match="call fit"):
        TorchPCA(2).transform(np.zeros((2, 2)))
    with pytest.raises(ConfigError, match="n_components.*got 0"):
        TorchPCA(0).fit(np.zeros((5, 2)))
    with pytest.raises(ConfigError, match="more than the data supports"):
        TorchPCA(5, device="cpu").fit(np.random.default_rng(0).normal(size=(4, 8)))
    (tmp_path / "x.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(Exception):
        TorchPCA.load(tmp_path / "x.safetensors")


def test_build_representations(tiny_table, encoder, tmp_path):
    reps = build_representations(tiny_table, encoder=encoder, cache=tmp_path, query_components=2,
                                 prompt_components=4, device="cpu")
    assert list(reps.query_ids) == ["q1", "q2", "q3"] and list(reps.prompt_ids) == ["plain", "cot"]
    assert reps.X.shape == (3, 2) and reps.T.shape == (2, 1)  # prompt PCA capped at n_prompts - 1
    assert reps.row_query.tolist() == [0, 0, 1, 1, 2, 2] and reps.row_prompt.tolist() == [0, 1] * 3
    assert reps.provenance["encoder"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert reps.provenance["cache"] == {"hits": 0, "misses": 5}


class _DiesAfter:
    """Wraps the real encoder and raises after `n` calls: a job killed in the middle of embedding."""

    def __init__(self, encoder, n):
        self.inner, self.n, self.model_id, self.identity = encoder, n, encoder.model_id, encoder.identity

    @property
    def dim(self):
        return self.inner.dim

    def encode(self, texts, *, prefix="", show_progress=False):
        if self.n == 0:
            raise KeyboardInterrupt("killed")
        self.n -= 1
        return self.inner.encode(texts, prefix=prefix)


def test_interrupted_embedding_resumes_from_committed_shards(encoder, tmp_path):
    texts = [f"Question {i}: what is {i} plus {i}?" for i in range(7)]
    with pytest.raises(KeyboardInterrupt):
        EmbeddingCache(tmp_path, shard_rows=3).embed(_DiesAfter(encoder, 2), texts)
    resumed = EmbeddingCache(tmp_path, shard_rows=3)
    out = resumed.embed(encoder, texts)
    assert (resumed.stats.hits, resumed.stats.misses) == (6, 1)  # two shards of 3 survived the kill
    np.testing.assert_allclose(out, encoder.encode(texts), atol=1e-5)
