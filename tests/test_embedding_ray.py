"""Embedding on Ray Data: encoder actors fill the same content-addressed cache as the in-process encoder."""

from __future__ import annotations

import numpy as np
import pytest

from cpo_engine.embedding import EmbeddingCache, RayEncoder
from cpo_engine.embedding.config import EmbedConfig
from cpo_engine.embedding.ray_embed import make_embed_encoder, on_ray_cluster
from cpo_engine.exceptions import ConfigError

TEXTS = [f"Question {i}: how many apples are left if {i} are eaten?" for i in range(150)] + \
        ["Let's think step by step.", "The answer is:"]


def test_config_and_local_fallback(encoder, tmp_path):
    """Off a cluster, 'auto' embeds in-process (no Ray import); bad settings are ConfigErrors."""
    with pytest.raises(ConfigError, match="executor"):
        EmbedConfig(executor="spark")
    with pytest.raises(ConfigError, match="ray_batch_size"):
        EmbedConfig(ray_batch_size=0)
    assert make_embed_encoder(EmbedConfig(executor="local")).__class__.__name__ == "SentenceTransformerEncoder"
    rayenc = RayEncoder(encoder, executor="auto", min_texts=1)
    if not on_ray_cluster():
        assert not rayenc.uses_ray(10_000)
        out = EmbeddingCache(tmp_path).embed(rayenc, TEXTS[:5])
        np.testing.assert_allclose(out, encoder.encode(TEXTS[:5]), atol=1e-6)
        assert rayenc.ray_calls == 0


ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=512 * 1024**2, log_to_driver=False,
             ignore_reinit_error=True)
    yield
    ray.shutdown()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_ray_actors_fill_the_same_cache(ray_local, encoder, tmp_path):
    """Two actors with fractional CPUs embed through the cache: same vectors as in-process, same keys, shards
    committed as batches arrive; a second pass (a new process) is all hits and starts no Ray job."""
    assert on_ray_cluster()
    rayenc = RayEncoder(encoder, executor="auto", actors=2, cpus_per_actor=0.5, batch_size=32, min_texts=50)
    assert rayenc.uses_ray(len(TEXTS)) and not rayenc.uses_ray(10)
    cache = EmbeddingCache(tmp_path, shard_rows=64)
    got = cache.embed(rayenc, TEXTS + TEXTS[:3], prefix="")
    assert rayenc.ray_calls == 1 and rayenc.last_pool == {"actors": 2, "num_cpus": 0.5, "num_gpus": 0.0}
    assert (cache.stats.hits, cache.stats.misses) == (0, len(TEXTS))
    assert len(list(tmp_path.rglob("shard-*.parquet"))) == 3  # 152 new vectors, 64 per shard
    ref = encoder.encode(TEXTS + TEXTS[:3])
    np.testing.assert_allclose(got, ref, atol=1e-5)
    again = EmbeddingCache(tmp_path)
    np.testing.assert_array_equal(again.embed(rayenc, TEXTS), got[:len(TEXTS)])
    assert (again.stats.hits, again.stats.misses, rayenc.ray_calls) == (len(TEXTS), 0, 1)
    # the same keys as the in-process encoder: a local cache user sees every vector as a hit
    local = EmbeddingCache(tmp_path)
    local.embed(encoder, TEXTS[:10])
    assert local.stats.misses == 0


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_encoder_keeps_order_and_prefix(ray_local, encoder):
    rayenc = RayEncoder(encoder, executor="ray", actors=1, cpus_per_actor=1.0, batch_size=16)
    out = rayenc.encode(list(reversed(TEXTS[:40])), prefix="query: ")
    np.testing.assert_allclose(out, encoder.encode(list(reversed(TEXTS[:40])), prefix="query: "), atol=1e-5)
    assert rayenc.dim == out.shape[1] == 384
