"""The Python API a notebook user expects (issue 22): DataFrames wherever a table is taken, a DataFrame ->
Policy path in memory, scikit-learn's parameter protocol (clone), per-prompt effects in summary()."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cpo_engine.exceptions import ConfigError, DataError

PROMPTS = {"plain": "The answer is:", "cot": "Let's think step by step.", "short": "Reply with a number."}


def _frame(n_queries: int = 20) -> pd.DataFrame:
    """Triplets as a notebook holds them: integer scores, one row per (query, prompt)."""
    return pd.DataFrame([{"query_id": f"q{i}", "query_text": f"What is {i} plus {2 * i + 1}?", "prompt_id": p,
                          "prompt_text": text, "score": int(p == "cot" or (p == "plain" and i % 2 == 0))}
                         for i in range(n_queries) for p, text in PROMPTS.items()])


def _discrete(n_queries: int = 200, seed: int = 0):
    """Four prompts on every query, a known average effect per prompt (vs prompt 0: 0, .3, -.2, .1)."""
    rng = np.random.default_rng(seed)
    prompts = np.array([[0., 0.], [1., 0.], [0., 1.], [1., 1.]])
    x = rng.normal(size=(n_queries, 2))
    q, a = np.repeat(np.arange(n_queries), 4), np.tile(np.arange(4), n_queries)
    X, T = x[q], prompts[a]
    Y = X[:, 0] + T @ [0.3, -0.2] + 0.5 * X[:, 1] * T[:, 0] + rng.normal(scale=0.3, size=len(q))
    return Y, T, X, q, prompts


# ------------------------------------------------------------------------------------- 1. tables


def test_tables_accepted_as_dataframe_arrow_or_path(tmp_path):
    from cpo_engine import read_queries, read_triplets, validate_triplets
    from cpo_engine.data.io import as_table

    df = _frame(3)
    a = validate_triplets(df)  # was: 'DataFrame' object has no attribute 'num_rows'
    assert isinstance(a, pa.Table) and a.schema.field("score").type == pa.float64()
    assert read_triplets(df).equals(a) and validate_triplets(pa.Table.from_pandas(df)).equals(a)
    path = tmp_path / "t.parquet"
    df.to_parquet(path)
    assert validate_triplets(path).equals(a) and read_triplets(str(path)).equals(a)

    class Frame:  # another dataframe library: exports Arrow
        def to_arrow(self):
            return pa.Table.from_pandas(df)

    assert validate_triplets(Frame()).equals(a)
    assert as_table(pa.Table.from_pandas(df).to_batches()[0]).num_rows == len(df)
    q = read_queries(pd.DataFrame({"query_id": [1, 2], "query_text": ["a?", "b?"], "extra": [0, 0]}))
    assert q.column_names == ["query_id", "query_text"] and q["query_id"].to_pylist() == ["1", "2"]
    with pytest.raises(DataError, match="a table was expected, got int") as e:
        validate_triplets(3)
    assert "pandas DataFrame" in str(e.value)
    with pytest.raises(DataError, match="missing required column"):
        validate_triplets(df.drop(columns=["score"]))


def test_configs_take_a_dataframe_and_stay_json(tmp_path):
    from cpo_engine import FitConfig, RunConfig, read_triplets
    from cpo_engine.data.config import DataConfig
    from cpo_engine.workflows.common import load_data

    df = _frame(3)
    cfg = FitConfig(data=df)  # was: "not JSON serializable" when the manifest was written
    assert cfg.data.table.num_rows == len(df) and read_triplets(cfg.data.path).num_rows == len(df)
    assert json.loads(json.dumps(dataclasses.asdict(cfg)))["data"]["path"].startswith("<in-memory table: 9 rows")
    assert dataclasses.replace(cfg, seed=1).data.table is cfg.data.table  # copies share the table
    assert RunConfig(data=pa.Table.from_pandas(df)).data.table.num_rows == 9
    assert FitConfig(data=tmp_path / "x.parquet").data.path == str(tmp_path / "x.parquet")
    assert FitConfig().data == DataConfig()  # the bundled example, as before
    table, info = load_data(cfg.data)
    assert info["in_memory"] and info["rows"] == 9 and not info["bundled_example"]
    assert info["sha256"] == load_data(DataConfig(path=df.copy()))[1]["sha256"]  # keyed on content
    assert info["sha256"] != load_data(DataConfig(path=df.assign(score=1)))[1]["sha256"]
    with pytest.raises(DataError, match="no rows have task"):
        load_data(DataConfig(path=df.assign(task="a"), tasks=["b"]))
    with pytest.raises(DataError, match="data must be a DataConfig or a table"):
        FitConfig(data=3.5)


# ------------------------------------------------------------------------------------- 2. DataFrame -> Policy


def test_fit_policy_in_memory_recommends_for_new_queries(tmp_path, monkeypatch, encoder):
    from cpo_engine import Policy, fit_policy

    monkeypatch.chdir(tmp_path)  # nothing may be written: not even the embedding cache
    with pytest.warns(UserWarning, match="too small or too noisy"):
        policy = fit_policy(_frame(20), encoder=encoder)
    assert isinstance(policy, Policy) and os.listdir(tmp_path) == []
    assert policy.static_prompt_id == "cot" and policy.fallback
    out = policy.assign(pd.DataFrame({"query_id": ["n1", "n2"], "query_text": ["What is 6 times 7?", "What is 1+1?"]}))
    assert out["query_id"].to_pylist() == ["n1", "n2"] and set(out["recommended_prompt_id"].to_pylist()) == {"cot"}
    assert policy.assign(["What is 6 times 7?"]).num_rows == 1
    eff = policy.model.prompt_effects(reference="plain").to_pandas().set_index("prompt_id")
    assert list(eff.index) == ["plain", "cot", "short"]  # the table's prompt ids, not PCA coordinates
    assert eff.loc["cot", "effect"] == pytest.approx(0.5, abs=0.05)
    assert "cot" in policy.model.summary()


def test_fit_workflow_writes_a_bundle_from_a_dataframe(tmp_path):
    from cpo_engine import FitConfig, Policy, fit
    from cpo_engine.embedding.config import EmbedConfig

    cfg = FitConfig(data=_frame(20), out=str(tmp_path / "run"), embed=EmbedConfig(cache_dir=None))
    with pytest.warns(UserWarning, match="too small or too noisy"):
        res = fit(cfg)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "ok" and manifest["data"]["in_memory"]
    assert manifest["config"]["data"]["path"].startswith("<in-memory table")
    loaded = Policy.load(res.out, warn=False)
    assert loaded.model.prompt_ids_ == ["plain", "cot", "short"]  # saved with the model
    assert "  cot " in loaded.model.summary()


# ------------------------------------------------------------------------------------- 3. scikit-learn's params


def test_get_params_set_params_and_clone():
    from sklearn.base import clone
    from sklearn.linear_model import Ridge

    from cpo_engine import CausalRewardModel, OutcomeRewardModel

    m = CausalRewardModel(model_y=Ridge(alpha=2.0), cv=3, device="cpu", final_alpha=0.0)
    deep = m.get_params(deep=True)
    assert deep["model_y__alpha"] == 2.0 and deep["cv"] == 3 and "model_y__alpha" not in m.get_params(deep=False)
    assert m.set_params(model_y__alpha=3.0, cv=4) is m and m.model_y.alpha == 3.0 and m.cv == 4
    with pytest.raises(ConfigError, match="no parameter 'cvv'"):
        m.set_params(cvv=2)
    with pytest.raises(ConfigError, match="no parameters to set"):
        m.set_params(model_t__alpha=1.0)  # 'ridge' is a name, not an estimator
    Y, T, X, q, _ = _discrete()
    m.fit(Y, T, X=X, groups=q)
    c = clone(m)
    assert not hasattr(c, "coef_") and c.model_y is not m.model_y
    assert {k: v for k, v in c.get_params(deep=True).items() if k != "model_y"} == \
        {k: v for k, v in m.get_params(deep=True).items() if k != "model_y"}
    np.testing.assert_allclose(c.fit(Y, T, X=X, groups=q).coef_, m.coef_)  # same params, same fit
    assert repr(c).startswith("CausalRewardModel(model_y=Ridge(alpha=3.0)")
    o = clone(OutcomeRewardModel(random_state=3))
    assert o.get_params() == {"model": None, "random_state": 3}


# ------------------------------------------------------------------------------------- 4. per-prompt effects


def test_prompt_effects_table_and_summary(tmp_path):
    from cpo_engine import CausalRewardModel

    Y, T, X, q, prompts = _discrete()
    m = CausalRewardModel(cv=3, device="cpu", final_alpha=0.0).fit(Y, T, X=X, groups=q)
    np.testing.assert_allclose(m.prompts_T_, prompts)  # the distinct rows of T, in first-seen order
    eff = m.prompt_effects(prompt_ids=list("abcd"), reference="a")
    assert eff.column_names == ["prompt_id", "effect", "se", "ci_low", "ci_high"]
    d = eff.to_pydict()
    assert d["effect"][0] == 0 and d["se"][0] == 0
    truth = [0.0, 0.3, -0.2, 0.1]
    assert all(lo <= t <= hi for lo, t, hi in zip(d["ci_low"], truth, d["ci_high"]))
    # the average over the fitted queries of the per-query effect
    xq = X[np.unique(q, return_index=True)[1]]
    manual = [m.effect(xq, T0=prompts[0], T1=p).mean() for p in prompts]
    np.testing.assert_allclose(d["effect"], manual, atol=1e-10)
    assert m.prompt_effects(reference=1).column("effect")[1].as_py() == 0  # by index; default ids p0..p3
    assert m.prompt_effects(X=xq[:10]).num_rows == 4
    text = m.summary()
    assert "per-prompt average effect vs t_ref_" in text and "\n  p1  " in text and "phi[0] x T[0]:" in text
    m.save(tmp_path / "m")
    back = CausalRewardModel.load(tmp_path / "m")
    np.testing.assert_allclose(back.prompt_effects().column("effect").to_numpy(),
                               m.prompt_effects().column("effect").to_numpy())
    with pytest.raises(DataError, match="not one of the prompt ids"):
        m.prompt_effects(reference="zz")


def test_summary_without_discrete_prompts_keeps_coefficients():
    from cpo_engine import CausalRewardModel
    from cpo_engine.causal.synthetic import make_synthetic

    d = make_synthetic(n_groups=60, seed=1)  # a continuous treatment: every row its own T
    m = CausalRewardModel(cv=3, device="cpu").fit(d.Y, d.T, X=d.X, groups=d.groups)
    assert m.prompts_T_ is None and "per-prompt" not in m.summary() and "phi[0] x T[0]:" in m.summary()
    assert m.prompt_effects(T=d.T[:3], prompt_ids=["x", "y", "z"]).num_rows == 3
