"""The bundled example: real LLaMA-2-7B-chat outcomes, svamp + mawps, 16 prompts (see NOTICE)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pyarrow as pa

EXAMPLE_NAME = "example_triplets.parquet"


def example_path() -> Path:
    """Path of the bundled example Parquet file inside the installed package."""
    return Path(str(resources.files("cpo_engine.resources").joinpath(EXAMPLE_NAME)))


def load_example(tasks: tuple[str, ...] | None = None) -> pa.Table:
    """The bundled example as a validated triplet table, optionally restricted to `tasks`."""
    import pyarrow.compute as pc

    from cpo_engine.data.validate import read_triplets

    table = read_triplets(example_path())
    if tasks:
        table = table.filter(pc.is_in(table["task"], pa.array(list(tasks))))
    return table


__all__ = ["example_path", "load_example", "EXAMPLE_NAME"]
