"""Tampered, truncated and corrupted files: each is refused with a DataError naming the file and the fix,
or (the embedding cache, which is derived data) set aside and rebuilt; and two different encoders in
folders of the same name never share cached vectors or a model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cpo_engine.causal import CausalRewardModel, load_model
from cpo_engine.causal.synthetic import make_synthetic
from cpo_engine.embedding import EmbeddingCache, TorchPCA, make_encoder
from cpo_engine.exceptions import ConfigError, DataError

PROV = {"embedder": {"id": "minilm", "query_prefix": "", "prompt_prefix": ""}}
TEXTS = [f"Question {i}: how many apples are left if Tom eats {i}?" for i in range(48)]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    data = make_synthetic(n_groups=60, rows_per_group=4, seed=2)
    path = tmp_path_factory.mktemp("model") / "m"
    CausalRewardModel(cv=3, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups).save(path, PROV)
    return path


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("key,value", [("d_t", 99), ("final_alpha", 123.0), ("cov_type", "HC0")])
def test_an_edited_model_json_is_refused(saved_model, tmp_path, key, value):
    m = _copy(saved_model, tmp_path / "m")
    meta = json.loads((m / "model.json").read_text())
    meta[key] = value
    (m / "model.json").write_text(json.dumps(meta, indent=2))
    with pytest.raises(DataError, match=r"(?s)model\.json.*edited or corrupted.*fix: rewrite it"):
        load_model(m)


def test_the_saved_model_json_round_trips_its_hash(saved_model):
    meta = json.loads((saved_model / "model.json").read_text())
    assert meta["format"] == "cpo-causal-model/2" and len(meta["content_sha256"]) == 64
    assert load_model(saved_model).d_t_ == meta["d_t"]


@pytest.mark.parametrize("damage", ["truncate", "not json", "a list"])
def test_invalid_model_json_is_a_data_error(saved_model, tmp_path, damage):
    m = _copy(saved_model, tmp_path / "m")
    text = (m / "model.json").read_text()
    (m / "model.json").write_text({"truncate": text[: len(text) // 2], "not json": "{oops", "a list": "[1, 2]"}[damage])
    with pytest.raises(DataError, match=r"model\.json"):
        load_model(m)


def test_a_truncated_pca_file_is_a_data_error(tmp_path):
    pca = TorchPCA(3, device="cpu").fit(np.random.default_rng(0).normal(size=(40, 6)))
    path = pca.save(tmp_path / "query_pca.safetensors")
    blob = path.read_bytes()
    for cut in (len(blob) // 2, 12, 3):
        path.write_bytes(blob[:cut])
        with pytest.raises(DataError, match=r"(?s)query_pca\.safetensors.*truncated or corrupted.*fix: rewrite it"):
            TorchPCA.load(path)
    with pytest.raises(DataError, match="missing"):
        TorchPCA.load(tmp_path / "nope.safetensors")


def test_a_corrupt_cache_shard_is_set_aside_and_its_texts_embedded_again(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path, shard_rows=16)
    first = cache.embed(encoder, TEXTS)
    shards = sorted(tmp_path.rglob("shard-*.parquet"))
    assert len(shards) == 3
    shards[1].write_bytes(shards[1].read_bytes()[:200])  # truncated (a disk error, a bad copy)
    again = EmbeddingCache(tmp_path, shard_rows=16)
    out = again.embed(encoder, TEXTS)
    np.testing.assert_allclose(out, first, atol=1e-6)
    assert (again.stats.hits, again.stats.misses) == (32, 16)
    assert shards[1].with_name(shards[1].name + ".corrupt").exists() and not shards[1].exists()
    third = EmbeddingCache(tmp_path, shard_rows=16)
    third.embed(encoder, TEXTS)
    assert (third.stats.hits, third.stats.misses) == (48, 0)


def test_temp_files_of_a_killed_writer_are_removed_on_the_next_write(encoder, tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.embed(encoder, TEXTS[:2])
    folder = next(tmp_path.rglob("shard-*.parquet")).parent
    stale = folder / ".shard-20250101T000000-deadbeef.parquet.x1y2.tmp"  # what atomic_path leaves on kill -9
    stale.write_bytes(b"half a shard")
    EmbeddingCache(tmp_path).embed(encoder, TEXTS[2:4])
    assert not stale.exists()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory) -> tuple[Path, Path]:
    """Two different sentence-transformers models, each in a folder called `model`: the packaged
    MiniLM, and a copy whose token embeddings carry a little noise (another fine-tune, in effect)."""
    from safetensors.numpy import load_file, save_file

    from cpo_engine.embedding.encoders import packaged_minilm_path

    root = tmp_path_factory.mktemp("models")
    a = _copy(Path(packaged_minilm_path()), root / "a" / "model")
    b = _copy(Path(packaged_minilm_path()), root / "b" / "model")
    weights = load_file(str(b / "model.safetensors"))
    key = next(k for k in weights if "word_embeddings" in k)
    w = weights[key]
    weights[key] = (w + np.random.default_rng(0).normal(0, 0.5 * w.std(), w.shape)).astype(w.dtype)
    save_file(weights, str(b / "model.safetensors"))
    return a, b


def test_two_models_in_folders_of_the_same_name_never_share_vectors(two_models, tmp_path):
    a, b = (make_encoder(str(p), device="cpu", num_threads=1) for p in two_models)
    assert a.model_id == b.model_id == "model" and a.identity != b.identity
    EmbeddingCache(tmp_path).embed(a, TEXTS)
    cache = EmbeddingCache(tmp_path)
    got = cache.embed(b, TEXTS)
    assert (cache.stats.hits, cache.stats.misses) == (0, len(TEXTS))
    np.testing.assert_allclose(got, b.encode(TEXTS), atol=1e-5)
    assert np.abs(got - a.encode(TEXTS)).max() > 1e-2


def test_a_model_bundle_refuses_another_encoder_of_the_same_name(two_models, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cpo_engine.config import load_config
    from cpo_engine.workflows import FitConfig
    from cpo_engine.workflows.bundle import ModelBundle
    from cpo_engine.workflows.fit import fit

    rng = np.random.default_rng(1)
    rows = [{"query_id": f"q{q}", "query_text": TEXTS[q], "prompt_id": f"p{p}", "prompt_text": f"Prompt {p}: think.",
             "score": float(rng.random() < 0.3 + 0.2 * p)} for q in range(30) for p in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    folder = tmp_path / "enc" / "model"
    _copy(two_models[0], folder)
    cfg = load_config(FitConfig, None, [f"data.path={tmp_path / 't.parquet'}", f"out={tmp_path / 'fit'}",
                                        f"embed.encoder={folder}", f"embed.cache_dir={tmp_path / 'cache'}",
                                        "embed.device=cpu", "pca.query_components=4", "causal.cv=2"])
    fit(cfg)
    bundle = ModelBundle.load(tmp_path / "fit")
    bundle.representer()  # the very weights it was fitted with: accepted
    shutil.rmtree(folder)
    _copy(two_models[1], folder)  # same path, same name, other weights
    with pytest.raises(ConfigError, match=r"(?s)not the one the model bundle .* weights or config differ"):
        ModelBundle.load(tmp_path / "fit").representer()


def test_an_edited_bundle_json_identity_is_refused(tmp_path, saved_model):
    """bundle.json is not hashed itself, but what it claims is checked against the hashed model.json."""
    from cpo_engine.causal.persist import check_provenance

    saved = {"embedder": {"id": "model", "identity": "model@sha256:aaaa", "query_prefix": "", "prompt_prefix": ""}}
    claim = {"embedder": {"id": "model", "identity": "model@sha256:bbbb", "query_prefix": "", "prompt_prefix": ""}}
    with pytest.raises(ConfigError, match="embedder"):
        check_provenance(saved, claim, tmp_path)
    legacy = {"embedder": {"id": "model", "query_prefix": "", "prompt_prefix": ""}}  # saved before identities
    check_provenance(legacy, claim, tmp_path)
