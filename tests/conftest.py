"""Shared fixtures. Tests run offline on the CPU; GPU tests are skipped without CUDA."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa  # noqa: E402
import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)


@pytest.fixture
def tiny_table() -> pa.Table:
    """3 queries x 2 prompts, one sample per cell: the smallest valid triplet table."""
    return pa.table({
        "query_id": ["q1", "q1", "q2", "q2", "q3", "q3"],
        "query_text": ["What is 2+2?"] * 2 + ["Tom has 3 apples and eats 1. How many are left?"] * 2
        + ["A train goes 60 km in 1 hour. How far in 3 hours?"] * 2,
        "prompt_id": ["plain", "cot"] * 3,
        "prompt_text": ["The answer is:", "Let's think step by step:"] * 3,
        "score": [1.0, 1.0, 0.0, 1.0, 0.0, 1.0],
    })


@pytest.fixture(scope="session")
def encoder():
    """The packaged all-MiniLM-L6-v2, loaded once per session on the CPU."""
    from cpo_engine.embedding import make_encoder

    return make_encoder(device="cpu", batch_size=32, num_threads=1)


def mawps_subset(tmp_path_factory, n_queries: int, name: str):  # noqa: ANN001, ANN201
    """The first ``n_queries`` mawps queries of the bundled example, all 16 prompts, as a Parquet file."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from cpo_engine.data import load_example

    t = load_example(tasks=("mawps",))
    keep = pc.unique(t["query_id"])[:n_queries]
    path = tmp_path_factory.mktemp("data") / name
    pq.write_table(t.filter(pc.is_in(t["query_id"], keep)), path)
    return path


@pytest.fixture(scope="session")
def small_example(tmp_path_factory):
    """The first 80 mawps queries of the bundled example, all 16 prompts, as a Parquet file."""
    return mawps_subset(tmp_path_factory, 80, "small_example.parquet")
