"""`cpo run` fits with the table's ``weight`` column, as `cpo fit` does (issue 12, item 6)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cpo_engine.data.grid import split_queries
from cpo_engine.workflows.config import HoldoutConfig
from cpo_engine.workflows.run import fit_models, training_logs
from tests.test_workflow_run import _cfg, _synthetic


def test_the_weight_column_changes_the_runs_fit() -> None:
    """Weight 0 on the queries with x0 > 0: the run's model must move from the unweighted fit towards the
    fit on the other queries alone (the heterogeneous truth differs between the two halves)."""
    reps, _, table = _synthetic(n_q=200)
    cfg = _cfg()
    train, _ = split_queries(reps.query_texts, cfg.holdout.test_fraction, 0)
    keep = reps.X[reps.row_query, 0] <= 0
    weighted = table.append_column("weight", pa.array(keep.astype(float)))

    def coef(tab, rows=None):
        logs = training_logs(tab, reps, train, HoldoutConfig(), seed=0)
        if rows is not None:
            sel = rows[np.flatnonzero(np.isin(reps.row_query, train))]
            logs.q, logs.p, logs.y = logs.q[sel], logs.p[sel], logs.y[sel]
        return fit_models(reps, logs, cfg)[0].coef_

    logs = training_logs(weighted, reps, train, HoldoutConfig(), seed=0)
    assert logs.w is not None and set(np.unique(logs.w)) == {0.0, 1.0}
    plain, with_w, subset = coef(table), coef(weighted), coef(table, keep)
    assert not np.allclose(plain, with_w)
    assert np.linalg.norm(with_w - subset) < 0.5 * np.linalg.norm(plain - subset)
