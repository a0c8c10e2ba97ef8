"""Ray glue: cross-fitting folds as tasks (crossfit.py) and the generation pipeline (generate.py).

Nothing here imports ray at module level: ray is an optional extra (`cpo-engine[ray]`).
"""
