"""Saving without pickle: round trip, provenance checks, corrupted files, residuals for refit, and every
registered torch nuisance saving and loading itself."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from cpo_engine.causal import CausalRewardModel, load_model
from cpo_engine.causal.nuisances import fit_nuisance, make_nuisance, persisted_nuisance_names
from cpo_engine.causal.synthetic import make_synthetic
from cpo_engine.exceptions import ConfigError, DataError, NotFittedError

PROV = {"embedder": {"id": "minilm", "query_prefix": "", "prompt_prefix": ""},
        "query_pca": {"n_components": 4, "sha256": "aa"}, "prompt_pca": {"n_components": 3, "sha256": "bb"}}


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_groups=80, rows_per_group=4, seed=4)


@pytest.mark.parametrize("nuisance", ["ridge", "mlp"])
def test_round_trip_keeps_effects_and_scores(tmp_path, data, nuisance):
    m = CausalRewardModel(model_y=nuisance, model_t=nuisance, cv=3, device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(data.Y, data.T, X=data.X, groups=data.groups)
    m.save(tmp_path / "m", PROV)
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = CausalRewardModel.load(tmp_path / "m", expect=PROV)
    X = data.X[:9]
    np.testing.assert_allclose(loaded.const_marginal_effect(X), m.const_marginal_effect(X), rtol=1e-12)
    np.testing.assert_allclose(loaded.effect_interval(X, T1=data.T[:9])[0], m.effect_interval(X, T1=data.T[:9])[0])
    np.testing.assert_allclose(loaded.score(data.Y, data.T, X=data.X), m.score(data.Y, data.T, X=data.X),
                               rtol=1e-5)
    assert loaded.diagnostics_.n_rows == len(data.Y)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["provenance"]["embedder"]["id"] == "minilm" and meta["provenance"]["versions"]["numpy"]


@pytest.mark.parametrize("key,value", [("embedder", {"id": "other", "query_prefix": "", "prompt_prefix": ""}),
                                       ("query_pca", {"n_components": 4, "sha256": "zz"}),
                                       ("prompt_pca", {"n_components": 5, "sha256": "bb"})])
def test_load_refuses_mismatched_embedder_or_pca(tmp_path, data, key, value):
    m = CausalRewardModel(cv=3, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    m.save(tmp_path / "m", PROV)
    with pytest.raises(ConfigError, match=key):
        load_model(tmp_path / "m", expect=PROV | {key: value})


def test_corrupted_or_missing_files_are_reported(tmp_path, data):
    m = CausalRewardModel(cv=3, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    m.save(tmp_path / "m", PROV)
    blob = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(blob[:-8] + b"\x00" * 8)
    with pytest.raises(DataError, match="does not match the hash"):
        load_model(tmp_path / "m")
    with pytest.raises(DataError, match="model.json is missing|is missing"):
        load_model(tmp_path / "nowhere")


def test_residuals_saved_allow_refit_final(tmp_path, data):
    m = CausalRewardModel(cv=3, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    m.save(tmp_path / "a", PROV, keep_residuals=True)
    m.save(tmp_path / "b", PROV)
    a = load_model(tmp_path / "a")
    a.refit_final(featurizer="constant")
    m.refit_final(featurizer="constant")
    np.testing.assert_allclose(a.coef_, m.coef_, rtol=1e-12)
    np.testing.assert_allclose(a.cov_, m.cov_, rtol=1e-10)
    with pytest.raises(NotFittedError):
        load_model(tmp_path / "b").refit_final()


def test_provenance_from_representations_detects_other_pca(tmp_path, data):
    from cpo_engine.causal import representation_provenance
    from cpo_engine.embedding import TorchPCA

    class Reps:  # the two PCA states and the encoder provenance are all that is read
        def __init__(self, seed):
            rng = np.random.default_rng(seed)
            self.query_pca = TorchPCA(4, device="cpu").fit(rng.normal(size=(50, 8)))
            self.prompt_pca = TorchPCA(3, device="cpu").fit(rng.normal(size=(20, 8)))
            self.provenance = {"encoder": "sentence-transformers/all-MiniLM-L6-v2", "query_prefix": "",
                               "prompt_prefix": ""}

    m = CausalRewardModel(cv=3, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    m.save(tmp_path / "m", representation_provenance(Reps(0)))
    assert load_model(tmp_path / "m", expect=representation_provenance(Reps(0))).coef_.shape == m.coef_.shape
    with pytest.raises(ConfigError, match="query_pca"):
        load_model(tmp_path / "m", expect=representation_provenance(Reps(1)))


@pytest.mark.parametrize("name", persisted_nuisance_names())
@pytest.mark.parametrize("one_d", [True, False])
def test_every_registered_torch_nuisance_round_trips(name, one_d):
    """Each class the registry builds owns its state: from_state(meta(), state_arrays()) predicts the same."""
    d = make_synthetic(n_groups=40, rows_per_group=4, seed=5)
    y = d.Y if one_d else d.T
    m = fit_nuisance(make_nuisance(name, random_state=1, device="cpu"), d.X, y, d.groups)
    meta = json.loads(json.dumps(m.meta()))  # what model.json keeps
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in m.state_arrays().items()}  # as safetensors
    loaded = type(m).from_state(meta, arrays)
    np.testing.assert_array_equal(loaded.predict(d.X), m.predict(d.X))


@pytest.mark.parametrize("name", persisted_nuisance_names())
def test_every_registered_torch_nuisance_survives_model_save(tmp_path, data, name):
    m = CausalRewardModel(model_y=name, model_t=name, cv=3, device="cpu", stats_crossfit=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.fit(data.Y, data.T, X=data.X, groups=data.groups)
    loaded = load_model(m.save(tmp_path / "m", PROV))
    assert [type(a) for a in loaded.models_y_ + loaded.models_t_] == [type(a) for a in m.models_y_ + m.models_t_]
    for got, want in zip(loaded.nuisance_predict(data.X), m.nuisance_predict(data.X)):
        np.testing.assert_array_equal(got, want)


def test_registered_nuisance_without_persistence_is_refused_at_save(tmp_path, data, monkeypatch):
    from cpo_engine.causal import nuisances
    from cpo_engine.causal.nuisances.ridge import TorchRidge

    class Forgetful(TorchRidge):  # a new torch nuisance that does not say how to save itself
        state_arrays = meta = from_state = None

    Forgetful.__module__, Forgetful.__qualname__ = "cpo_engine.causal.nuisances.forgetful", "Forgetful"
    m = CausalRewardModel(cv=3, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
    m.models_y_ = [Forgetful(device="cpu").fit(data.X, data.Y)]
    with pytest.raises(ConfigError, match="not in the nuisance registry"):
        m.save(tmp_path / "a", PROV)
    monkeypatch.setitem(nuisances._REGISTRY, "forgetful", "cpo_engine.causal.nuisances.forgetful:Forgetful")
    with pytest.raises(ConfigError, match="'forgetful'.*lacks state_arrays, meta, from_state"):
        m.save(tmp_path / "b", PROV)


def test_unknown_nuisance_name_fails_before_fitting(data):
    with pytest.raises(ConfigError, match="model_t: unknown nuisance 'mpl' \\(did you mean 'mlp'\\?\\)"):
        CausalRewardModel(model_t="mpl", cv=3, device="cpu").fit(data.Y, data.T, X=data.X, groups=data.groups)
