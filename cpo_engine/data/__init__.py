"""Triplet data contract: schema, readers, validator, bundled example."""

from cpo_engine.data.example import example_path, load_example
from cpo_engine.data.io import read_table
from cpo_engine.data.schema import OPTIONAL, REQUIRED, TRIPLET_SCHEMA
from cpo_engine.data.validate import read_triplets, validate_triplets

__all__ = ["read_table", "read_triplets", "validate_triplets", "load_example", "example_path",
           "REQUIRED", "OPTIONAL", "TRIPLET_SCHEMA"]
