"""The learned prompt policy: which prompt to use for a new query, and the evidence behind it.

A fitted run (`cpo run`, `cpo fit`) saves, beside its model bundle, what the policy needs besides the
model: the candidate prompts (the logged ones: id, text, representation T, training mean score), the
incumbent (the logged prompt the model ranks best on average, from which effects are measured), the
selection rule (z, trust region, length penalty) and the evidence of the three checks below.

For a new query the policy embeds its text (the bundle's encoder, through the embedding cache),
projects it with the bundle's query PCA, scores every candidate with the causal model's linear head
and picks the best lower confidence bound ``effect - z * se`` (the rule of `cpo run`): a query leaves
the incumbent only when the bound of its gain is positive.

Checks, each a reason the data are too small or too noisy to learn a per-query policy (then every
query gets the incumbent, with an :class:`UnreliablePolicyWarning`, unless ``policy.fallback`` is off):

1. few training queries: fewer than ``policy.min_queries``, or than the heterogeneity coefficients
   ((d_phi - 1) x d_T) a per-query policy estimates;
2. outcome R^2 near zero: the query features barely predict the score, and the joint Wald test finds
   no variation of the effects with them (p >= 0.05; a pure interaction effect is still learned);
3. intervals that cover everything: the median 95% interval of a per-query effect is wider than the
   whole spread of the prompts' mean scores;
4. no honest evidence of heterogeneity: the model's half-sample predictions of each query's uplift do not
   predict the other half's measured or doubly robust uplifts (:func:`honest_heterogeneity`, one-sided
   p >= ``policy.heterogeneity_level``): then a per-query policy would only chase noise.

::

    from cpo_engine import Policy
    policy = Policy.load("runs/mine")
    policy.assign(["A train goes 60 km in 1 hour. How far in 3 hours?"]).to_pandas()
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from cpo_engine.data.grid import nan_mean
from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.policy.bundle import content_sha, fetch_run  # noqa: F401 (fetch_run: re-exported)
from cpo_engine.policy.config import PolicyConfig
from cpo_engine.search.config import SelectionConfig
from cpo_engine.utils import atomic_write_json, is_uri

log = logging.getLogger(__name__)

FORMAT = "cpo-policy/1"
STATE_FILE = "policy.json"
_Z95 = NormalDist().inv_cdf(0.975)

#: Columns of an assignment (one row per query), in order.
ASSIGNMENT_COLUMNS = ("query_id", "recommended_prompt_id", "recommended_prompt_text", "source", "verified",
                      "effect", "effect_ci_low", "effect_ci_high", "departs_from_static", "reason",
                      "static_prompt_id")
SOURCES = {"logged": "logged (an LLM ran it in the logs)", "searched": "searched (predicted only)"}


class UnreliablePolicyWarning(UserWarning):
    """The data are too small or too noisy to learn a per-query policy: the message says why and what the
    policy falls back to (the best static prompt for every query)."""


@dataclass
class PolicyState:
    """What a fitted run saves for its policy (``model/policy.json``), besides the model and the PCAs.

    Attributes
    ----------
    prompt_ids, prompt_texts : list of str
        The logged prompts (the candidates an LLM ran).
    T : ndarray (n_prompts, d_T)
        Their representations in the bundle's prompt PCA space.
    train_mean : list of float
        Mean recorded score of each prompt on the training queries (NaN where never logged there).
    incumbent : int
        Index of the logged prompt the model ranks best on average over the training queries: the
        static prompt every query keeps unless its gain is confidently positive.
    selection : SelectionConfig
        The selection rule of the run (z, reference, trust region, length penalty).
    evidence : dict
        Inputs of the reliability checks: n_train_queries, n_heterogeneity_coefs, outcome_r2,
        heterogeneity_p_value, median_ci_halfwidth, mean_score_spread.
    searched_sha256 : str or None
        :func:`searched_candidates_sha256` of the run's ``search/candidates.parquet`` (None: the run searched
        nothing). Serving with ``candidates='searched'`` reads that file: this hash, under policy.json's own,
        puts it under the bundle's integrity check.
    """

    prompt_ids: list[str]
    prompt_texts: list[str]
    T: np.ndarray
    train_mean: list[float]
    incumbent: int
    selection: SelectionConfig
    evidence: dict[str, Any] = field(default_factory=dict)
    searched_sha256: str | None = None

    @property
    def static_id(self) -> str:
        return self.prompt_ids[self.incumbent]

    def to_dict(self) -> dict[str, Any]:
        prompts = [{"prompt_id": p, "prompt_text": t, "train_mean_score": _num(m), "T": [float(v) for v in row]}
                   for p, t, m, row in zip(self.prompt_ids, self.prompt_texts, self.train_mean, self.T)]
        body = {"format": FORMAT, "static_prompt_id": self.static_id, "selection": asdict(self.selection),
                "evidence": self.evidence, "prompts": prompts}
        if self.searched_sha256 is not None:
            body["searched_candidates_sha256"] = self.searched_sha256
        return body | {"content_sha256": content_sha(body)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = STATE_FILE) -> "PolicyState":
        if d.get("format") != FORMAT:
            raise DataError(f"format {d.get('format')!r}, expected {FORMAT!r}", source=source,
                            fix="refit with this version (`cpo run` or `cpo fit`)")
        if "content_sha256" not in d:
            raise DataError("no content hash (content_sha256): written by an older version, or edited", source=source,
                            fix="rerun `cpo run` or `cpo fit` to write a policy that serving can check")
        if d["content_sha256"] != content_sha({k: v for k, v in d.items() if k != "content_sha256"}):
            raise DataError("the policy does not match its hash (content_sha256): it was edited or corrupted after "
                            "it was written (a changed prompt text or static prompt would be served as the fitted "
                            "one)", source=source, fix="rerun `cpo run` or `cpo fit`, or restore the file")
        ids = [p["prompt_id"] for p in d["prompts"]]
        return cls(prompt_ids=ids, prompt_texts=[p["prompt_text"] for p in d["prompts"]],
                   T=np.array([p["T"] for p in d["prompts"]], dtype=np.float64),
                   train_mean=[float("nan") if p["train_mean_score"] is None else p["train_mean_score"]
                               for p in d["prompts"]],
                   incumbent=ids.index(d["static_prompt_id"]), selection=SelectionConfig(**d["selection"]),
                   evidence=d.get("evidence", {}), searched_sha256=d.get("searched_candidates_sha256"))

    def save(self, bundle_dir: str | Path) -> Path:
        return atomic_write_json(Path(bundle_dir) / STATE_FILE, self.to_dict())

    @classmethod
    def load(cls, bundle_dir: str | Path) -> "PolicyState":
        path = Path(bundle_dir) / STATE_FILE
        if not path.is_file():
            status = _run_status(Path(bundle_dir).parent)
            why = (f"the run that wrote it did not finish (status {status!r} in its manifest.json)"
                   if status not in (None, "ok") else "written by an older version")
            raise ConfigError(f"{bundle_dir} holds a model but no {STATE_FILE} ({why}): rerun `cpo run` or `cpo fit` "
                              "to get a bundle that can assign prompts")
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"not a valid policy file ({exc})", source=str(path),
                            fix="rerun `cpo run` or `cpo fit`") from exc


def _run_status(run_dir: Path) -> str | None:
    """The status a run folder's manifest records ('running' reads as 'interrupted': its writer is gone)."""
    try:
        status = json.loads((run_dir / "manifest.json").read_text()).get("status")
    except (OSError, ValueError, AttributeError):
        return None
    return "interrupted" if status == "running" else status


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


# ---------------------------------------------------------------------------------------- learning


def learn_state(model: Any, X_train: np.ndarray, prompt_ids: Sequence[str], prompt_texts: Sequence[str],
                T: np.ndarray, train_mean: np.ndarray, selection: SelectionConfig, *,
                max_queries: int = 5000, incumbent: int | None = None, static_choice: Any = None,
                X_queries: np.ndarray | None = None) -> PolicyState:
    """The policy state of a fitted model: the incumbent (the best static prompt chosen from the logs by
    :func:`~cpo_engine.causal.static_choice.choose_static`: ``static_choice``, or its index ``incumbent``) and
    the evidence of the reliability checks (the interval check on at most ``max_queries`` training queries;
    the heterogeneity test is the honest one of :func:`honest_heterogeneity` when ``static_choice`` is given;
    ``X_queries``: the features of the queries its ``queries`` index, default ``X_train``)."""
    if static_choice is not None:
        incumbent = static_choice.index
    from cpo_engine.kernels import dispatch as kernels
    from cpo_engine.search import referenced_head

    head, inc = referenced_head(model.linear_head(), X_train, T, selection.reference, incumbent)
    X = X_train[np.linspace(0, len(X_train) - 1, min(len(X_train), max_queries)).astype(int)]
    others = np.delete(np.asarray(T, dtype=np.float64), inc, axis=0)
    _, se = kernels.score_dense(head.featurize(X), others - head.t_ref, head.coef, head.cov)
    diag = getattr(model, "diagnostics_", None)
    means = np.asarray(train_mean, dtype=np.float64)
    evidence = {"n_train_queries": int(diag.n_groups if diag is not None else len(X_train)),
                "n_heterogeneity_coefs": int((head.d_phi - 1) * head.d_t),
                "outcome_r2": float(diag.r2_y) if diag is not None else None,
                "heterogeneity_p_value": heterogeneity_p_value(head),
                "heterogeneity_test": "joint Wald test of the fitted head",
                "median_ci_halfwidth": float(np.median(_Z95 * se)) if se.size else 0.0,
                "mean_score_spread": float(np.nanmax(means) - np.nanmin(means)) if np.isfinite(means).any() else None}
    if static_choice is not None:
        X_choice = X_train if X_queries is None else X_queries  # the queries static_choice indexes
        honest = honest_heterogeneity(model, X_choice, np.asarray(T, dtype=np.float64), static_choice)
        if honest is not None:
            evidence["heterogeneity_wald_p_value"] = evidence["heterogeneity_p_value"]
            evidence.update(heterogeneity_p_value=honest["p_value"], heterogeneity_test=honest["test"],
                            heterogeneity_slope=honest["slope"], heterogeneity_slope_se=honest["se"])
        evidence["static_choice"] = static_choice.to_dict()
        # the prompt-level error of predictions for never-logged prompts (verify's intervals on searched prompts)
        from cpo_engine.causal.new_prompt_error import leave_prompts_out

        npe = leave_prompts_out(model, X_choice, np.asarray(T, dtype=np.float64), static_choice)
        evidence["new_prompt_error"] = None if npe is None else npe.to_dict()
    return PolicyState(prompt_ids=[str(p) for p in prompt_ids], prompt_texts=list(prompt_texts),
                       T=np.asarray(T, dtype=np.float64), train_mean=[float(m) for m in means], incumbent=int(inc),
                       selection=selection, evidence=evidence)


def honest_heterogeneity(model: Any, X: np.ndarray, T: np.ndarray, choice: Any,
                         permutations: int = 199) -> dict[str, Any] | None:
    """Do the model's per-query differences between prompts predict held-out ones? An honest test of effect
    heterogeneity, at its level with one logged prompt per query (the joint Wald test of every heterogeneity
    coefficient is not: with hundreds of coefficients its sandwich covariance is far too small).

    The model is refitted (nuisances and final stage) on one of two disjoint, seeded halves of its training
    queries; that fit predicts, for every query of the *other* half, each candidate prompt's uplift over a
    reference prompt (the most logged candidate); per-query pseudo-outcomes recomputed from that other half's rows alone (as
    :func:`~cpo_engine.causal.static_choice.choose_static` computes them: measured cell means, or doubly
    robust) give its realized uplift. Nothing is shared between the halves. One direction only: adding the
    reverse one (fit on the second half, test on the first) pairs two statistics that are nearly the same
    bilinear form of the two halves' noise, so their sum has about twice the variance the query-clustered
    standard error (and the permutation) assume; that test rejected 13-14% of the time at a nominal 5%
    under a null (bench_calibration's one_per_query part). Regressing realized on predicted uplift, centred
    per prompt (the best linear predictor test of Chernozhukov, Demirer, Duflo and Fernandez-Val), gives a
    slope that is 0 when the effects do not vary with the query; the one-sided p-value is that of a
    studentized permutation test. None when the model does not keep its training data or the choice has no
    pseudo-outcomes.

    ``X``: features of the queries ``choice.queries`` index (the rows the model was fitted on)."""
    from cpo_engine.causal.inference import split_halves
    from cpo_engine.kernels import dispatch as kernels

    uq = getattr(choice, "queries", None)
    data = [getattr(model, k, None) for k in ("_Y", "_T", "_X", "_groups")]
    if uq is None or any(d is None for d in data) or model.linear_head().d_phi < 2:
        return None
    Yr, Tr, Xr, groups = data
    w = getattr(model, "_w", None)
    # the reference prompt must not depend on the outcomes: the chosen static prompt won on its estimates,
    # partly on the test half's noise, whose winner's curse both the fit and the held-out uplifts then share
    # (8.5% rejections at a nominal 5% with it, 6% with this one, and more power). The effects vary with the
    # query against one reference exactly when they do against any other.
    inc = max(choice.values, key=lambda v: (v.n_rows, -v.index)).index  # the most logged candidate
    cands = np.array([v.index for v in choice.values if v.index != inc], dtype=np.int64)
    # the model keeps its groups as dense codes in sorted order of the query ids it was given: code k is uq[k]
    if len(cands) == 0 or len(X) <= int(uq.max()) or len(np.unique(groups)) != len(uq) or groups.max() >= len(uq):
        return None
    Xq = np.asarray(X, dtype=np.float64)[uq]
    half = split_halves(len(uq), int(getattr(model, "random_state", 0) or 0))
    # fit on the first half (nuisances included), test on the second: nothing shared, one direction only
    fit_rows = np.flatnonzero(half[groups] == 0)
    qs = np.flatnonzero(half != 0)
    if len(qs) < 3 or len(np.unique(groups[fit_rows])) < 10:
        return None
    params = model.get_params(deep=False) | {"random_state": int(getattr(model, "random_state", 0) or 0)}
    fitted = type(model)(**params).fit(Yr[fit_rows], Tr[fit_rows], X=Xr[fit_rows], groups=groups[fit_rows],
                                       sample_weight=None if w is None else w[fit_rows]).linear_head()
    eff, _ = kernels.score_dense(fitted.featurize(Xq[qs]), T[cands] - T[inc], fitted.coef, fitted.cov)
    Y = _half_pseudo(choice, uq[qs])
    if Y is None:
        return None
    Y = Y[:, cands] - Y[:, [inc]]
    ok = np.isfinite(Y)
    Y = np.where(ok, Y - nan_mean(np.where(ok, Y, np.nan), axis=0), 0.0)  # a candidate no query ran: all 0
    S = np.where(ok, eff - nan_mean(np.where(ok, eff, np.nan), axis=0), 0.0)

    def t_stat(S: np.ndarray) -> tuple[float, float, float]:
        sxx = float((S * S).sum())
        if sxx <= 1e-300:
            return 0.0, 0.0, float("inf")
        beta = float((S * Y).sum() / sxx)
        score = ((Y - beta * S) * S).sum(axis=1)  # one value per query: clustered by query
        se = float(np.sqrt((score ** 2).sum()) / sxx)
        return (beta / se if se > 0 else 0.0), beta, se

    t_obs, beta, se = t_stat(S)
    if not np.isfinite(se):
        return {"p_value": 1.0, "slope": 0.0, "se": float("inf"), "test": "honest BLP (no predicted variation)"}
    # studentized permutation test (predictions shuffled among the tested queries): the pseudo-outcomes of
    # logs are heavy-tailed (inverse propensities), where the normal approximation of t over-rejects
    rng = np.random.default_rng(int(getattr(model, "random_state", 0) or 0) + 0x4E7)
    exceed = sum(t_stat(S[rng.permutation(len(S))])[0] >= t_obs for _ in range(permutations))
    p = (1 + exceed) / (1 + permutations)
    return {"p_value": float(p), "slope": beta, "se": se, "permutations": permutations,
            "test": "honest: half-sample predictions of per-query uplift vs held-out pseudo-outcomes "
                    "(studentized permutation test, one-sided)"}


def heterogeneity_p_value(head: Any) -> float | None:
    """p-value of the joint Wald test that the effect does not vary with the query (every row of B
    but the constant one is zero); None for a model without heterogeneity terms."""
    from scipy.stats import chi2

    if head.d_phi < 2:
        return None
    k = head.d_t  # the constant row of B holds the first d_T entries of vec(B)
    b, V = head.coef[1:].ravel(), head.cov[k:, k:]
    stat = float(b @ np.linalg.pinv(V, rcond=1e-10, hermitian=True) @ b)
    return float(chi2.sf(stat, np.linalg.matrix_rank(V, hermitian=True)))


def table_state(model: Any, reps: Any, y: np.ndarray, selection: SelectionConfig, table: Any = None,
                seed: int = 0, rows: np.ndarray | None = None) -> PolicyState:
    """The policy state over every query and prompt of a table (`cpo fit`, `cpo optimize`): the best static
    prompt chosen from all its rows (its propensity and weight columns when ``table`` has them), each
    prompt's mean score over all its rows. ``rows``: only these rows (the ones the model was fitted on, when
    other queries are held out to value the policy), indices into the table."""
    from cpo_engine.causal.static_choice import choose_static

    n_p = len(reps.prompt_ids)
    rows = np.arange(len(y)) if rows is None else np.asarray(rows, dtype=np.int64)
    q, a, y = reps.row_query[rows], reps.row_prompt[rows], np.asarray(y)[rows]
    with np.errstate(all="ignore"):
        means = np.bincount(a, weights=y, minlength=n_p) / np.bincount(a, minlength=n_p)
    prop = weight = None
    if table is not None:
        from cpo_engine.causal.ope import logged_propensity

        prop = logged_propensity(table, rows)
        if "weight" in table.column_names:
            weight = np.asarray(table.column("weight").to_numpy(zero_copy_only=False), dtype=np.float64)[rows]
    choice = choose_static(q, a, y, reps.X, [str(p) for p in reps.prompt_ids],
                           propensity=prop, weight=weight, query_texts=list(reps.query_texts), seed=seed)
    return learn_state(model, reps.X[np.unique(q)], reps.prompt_ids, reps.prompt_texts, reps.T, means, selection,
                       static_choice=choice, X_queries=reps.X)


def save_fitted_policy(bundle_dir: str | Path, model: Any, reps: Any, y: np.ndarray, selection: SelectionConfig,
                       config: PolicyConfig | None = None, table: Any = None, seed: int = 0) -> PolicyState:
    """:func:`table_state` of a model fitted on every row of a table, saved into its bundle; warns when
    the checks fail."""
    state = table_state(model, reps, y, selection, table, seed)
    state.save(bundle_dir)
    Policy(model, state, config, source=str(bundle_dir)).warn()
    return state


def searched_from_result(result: Any, logged_texts: Sequence[str], n: int) -> tuple[list[str], list[str], np.ndarray]:
    """The best ``n`` candidates of a beam search (static objective, inside the trust region), logged
    prompts left out: the searched candidates a policy may recommend."""
    logged = set(logged_texts)
    keep = [int(i) for i in result.ranking() if np.isfinite(result.static_objective[i])
            and result.candidates[i].text not in logged][:n]
    return ([result.candidates[i].id for i in keep], [result.candidates[i].text for i in keep],
            np.asarray(result.T)[keep].reshape(len(keep), -1))


def _half_pseudo(choice: Any, queries: np.ndarray) -> np.ndarray | None:
    """Pseudo-outcomes (len(queries), n_prompts) of ``queries`` recomputed from their own rows only (the
    doubly robust nuisances cross-fitted inside the half), so that nothing ties them to the other half, and
    without self-normalization, so that their mean given the query is the true one."""
    from cpo_engine.causal.static_choice import choose_static

    r = choice.rows
    if r is None:
        return None
    keep = np.isin(r["q"], queries)
    prop = None if r["propensity"] is None else np.asarray(r["propensity"])[keep]
    weight = None if r["weight"] is None else np.asarray(r["weight"])[keep]
    from dataclasses import replace

    try:
        sub = choose_static(r["q"][keep], r["a"][keep], r["y"][keep], r["X"], r["prompt_ids"], propensity=prop,
                            weight=weight, query_texts=r["query_texts"], seed=r["seed"],
                            config=replace(r["config"], self_normalized=False, combine=False))
    except DataError:
        return None
    if not np.array_equal(sub.queries, np.sort(queries)):
        return None
    return sub.pseudo[np.searchsorted(sub.queries, queries)]


def reliability_problems(evidence: dict[str, Any], cfg: PolicyConfig) -> list[str]:
    """The checks of the module docstring that fail, each as one sentence (empty: none)."""
    out = []
    n, k = evidence.get("n_train_queries"), evidence.get("n_heterogeneity_coefs", 0)
    if n is not None and n < max(cfg.min_queries, k):
        out.append(f"only {n} training queries for a per-query model with {k} heterogeneity coefficients "
                   f"(needs at least {max(cfg.min_queries, k)})")
    r2, p = evidence.get("outcome_r2"), evidence.get("heterogeneity_p_value")
    if r2 is not None and r2 < cfg.min_outcome_r2 and (p is None or p >= 0.05):
        out.append(f"the query features explain almost none of the score (out-of-fold outcome R^2 {r2:.3f} < "
                   f"{cfg.min_outcome_r2}) and the prompts' effects do not detectably vary with them"
                   + (f" (heterogeneity test p = {p:.2f})" if p is not None else ""))
    hw, spread = evidence.get("median_ci_halfwidth"), evidence.get("mean_score_spread")
    if hw is not None and spread is not None and hw > spread:
        out.append(f"per-query effect intervals (median 95% CI +/-{hw:.3f}) are wider than the whole spread of "
                   f"the prompts' mean scores ({spread:.3f}): they cover every plausible effect")
    test = str(evidence.get("heterogeneity_test", ""))
    if test.startswith("honest") and p is not None and p >= cfg.heterogeneity_level:
        out.append(f"the model's per-query differences between prompts do not predict held-out ones (honest "
                   f"heterogeneity test p = {p:.2f} >= policy.heterogeneity_level = {cfg.heterogeneity_level}): "
                   "no evidence that any query is better served by another prompt")
    return out


# ---------------------------------------------------------------------------------------- the policy


@dataclass
class _Candidates:
    ids: list[str]
    texts: list[str]
    T: np.ndarray
    source: list[str]


class Policy:
    """Recommend one prompt per query with a fitted causal reward model.

    Parameters
    ----------
    model : CausalRewardModel
        The fitted model (its linear head scores the candidates).
    state : PolicyState
        Candidates, incumbent, selection rule and evidence saved by the run.
    config : PolicyConfig, optional
        Candidate set, fallback and the thresholds of the checks.
    query_features : callable, optional
        ``texts -> X`` (encoder through the cache, then the bundle's query PCA); needed by
        :meth:`assign` with texts, not by :meth:`assign_features`.
    searched : (ids, texts, T), optional
        Searched candidates that compete when ``config.candidates == 'searched'``.
    device : str
        Where the scoring runs.

    Attributes
    ----------
    problems : list of str
        Failed reliability checks (empty when the per-query policy is trusted).
    fallback : bool
        True when every query gets the static prompt because of ``problems``.

    Examples
    --------
    Logged triplets in a DataFrame -> a policy in memory (:func:`~cpo_engine.workflows.fit.fit_policy`, no
    file written): 20 arithmetic questions, three prompts, step-by-step reasoning best everywhere.

    >>> import pandas as pd
    >>> from cpo_engine import fit_policy
    >>> prompts = {"plain": "The answer is:", "cot": "Let's think step by step.", "short": "Reply with a number."}
    >>> df = pd.DataFrame([{"query_id": f"q{i}", "query_text": f"What is {i} plus {2 * i + 1}?", "prompt_id": p,
    ...                     "prompt_text": text, "score": float(p == "cot" or (p == "plain" and i % 2 == 0))}
    ...                    for i in range(20) for p, text in prompts.items()])
    >>> policy = fit_policy(df, warn=False)  # 20 queries are too few for a per-query policy: it falls back
    >>> policy.static_prompt_id, policy.fallback
    ('cot', True)
    >>> policy.assign(["What is 6 times 7?"], query_ids=["new1"]).to_pandas()[["query_id", "recommended_prompt_id"]]
      query_id recommended_prompt_id
    0     new1                   cot
    >>> policy.model.prompt_effects(reference="plain").to_pandas()[["prompt_id", "effect"]].round(1)
      prompt_id  effect
    0     plain     0.0
    1       cot     0.5
    2     short    -0.5

    A `cpo run` / `cpo fit` folder loads the same way: ``Policy.load("runs/mine")``.
    """

    def __init__(self, model: Any, state: PolicyState, config: PolicyConfig | None = None, *,
                 query_features: Callable[[list[str]], np.ndarray] | None = None,
                 searched: tuple[list[str], list[str], np.ndarray] | None = None, device: str = "auto",
                 source: str | None = None) -> None:
        self.model, self.state, self.config = model, state, config or PolicyConfig()
        self.query_features, self.device, self.source = query_features, device, source
        head = model.linear_head()
        if state.selection.reference == "incumbent":
            head = head.with_reference(state.T[state.incumbent])  # its split halves too
        self.head = head
        self.candidates = _Candidates(list(state.prompt_ids), list(state.prompt_texts), state.T,
                                      ["logged"] * len(state.prompt_ids))
        if searched is not None and self.config.candidates == "searched":
            ids, texts, T = searched
            self.candidates = _Candidates(self.candidates.ids + list(ids), self.candidates.texts + list(texts),
                                          np.vstack([state.T, T]), self.candidates.source + ["searched"] * len(ids))
        self.problems = reliability_problems(state.evidence, self.config)
        self.fallback = bool(self.problems) and self.config.fallback
        self.live: dict[str, Any] | None = None
        """The nightly state's live record when loaded from a state folder (a static one: every query gets it)."""

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path, config: PolicyConfig | None = None, *, embed: Any = None,
             device: str = "auto", warn: bool = True) -> "Policy":
        """The policy of a `cpo run` / `cpo fit` folder or its ``model/`` bundle, or what a `cpo nightly` state
        folder serves (its ``live.json``: a static prompt, or the live run's per-query policy).

        ``embed`` (an EmbedConfig) sets the device, cache and batch size of the query encoder; the
        encoder itself and its prefixes are the bundle's. With ``config.candidates == 'searched'`` the
        run's searched candidates (``search/candidates.parquet``) compete too.
        """
        from cpo_engine.policy.bundle import ModelBundle
        from cpo_engine.policy.live import fetch_state, live_run

        if is_uri(path):  # a nightly state on an object store: a local copy of what it serves
            local = fetch_state(path)
            live = None if local is None else live_run(local, shown=str(path).rstrip("/"))
        else:
            live = live_run(path)
        if live is not None:
            policy = cls._load_live(live, config or PolicyConfig(), embed, device, warn)
            policy.live["state"] = str(path)
            return policy
        bundle = ModelBundle.load(fetch_run(path) if is_uri(path) else path)
        cfg = config or PolicyConfig()
        state = PolicyState.load(bundle.path)
        features = _LazyQueryFeatures(bundle, embed)
        searched = None
        if cfg.candidates == "searched":
            searched = _searched_candidates(bundle.path.parent / "search" / "candidates.parquet", state,
                                            cfg.max_searched, features.prompt_embedder)
        policy = cls(bundle.model, state, cfg, query_features=features, searched=searched, device=device,
                     source=str(bundle.path))
        if warn:
            policy.warn()
        return policy

    @classmethod
    def _load_live(cls, live: Any, cfg: PolicyConfig, embed: Any, device: str, warn: bool) -> "Policy":
        """The policy a nightly state serves: the live run's bundle and policy; a static live prompt becomes
        the incumbent every query gets (embedded with the bundle's encoder when the run did not log it)."""
        from cpo_engine.policy.bundle import ModelBundle

        if cfg.candidates == "searched":
            raise ConfigError(f"{live.state} is a nightly state folder: it serves what went live ({live.kind}), "
                              "never unverified searched candidates; drop policy.candidates=searched (--candidates)")
        bundle = ModelBundle.load(live.run)
        state = PolicyState.load(bundle.path)
        features = _LazyQueryFeatures(bundle, embed)
        if live.kind == "static":
            state = _with_static(state, live.record["id"], live.record["text"], features.prompt_embedder)
        policy = cls(bundle.model, state, cfg, query_features=features, device=device, source=str(bundle.path))
        policy.live = dict(live.record, state=str(live.state))
        if warn and live.kind == "per_query":
            policy.warn()
        return policy

    def warn(self) -> None:
        """Raise the :class:`UnreliablePolicyWarning` of the failed checks (nothing when none failed)."""
        if not self.problems:
            return
        then = (f"Falling back: every query gets the best static prompt '{self.state.static_id}' instead"
                if self.fallback else "policy.fallback is off, so the per-query choice is used anyway")
        warnings.warn(f"the data are too small or too noisy to learn a per-query policy: {'; '.join(self.problems)}. "
                      f"{then}.", UnreliablePolicyWarning, stacklevel=3)

    # ------------------------------------------------------------------ assigning
    @property
    def static_prompt_id(self) -> str:
        """The prompt every query gets unless its gain is confidently positive (the incumbent)."""
        return self.state.static_id

    @property
    def static_prompt_text(self) -> str:
        return self.state.prompt_texts[self.state.incumbent]

    def assign(self, queries: Any, query_ids: Sequence[Any] | None = None) -> pa.Table:
        """One recommended prompt per query.

        Parameters
        ----------
        queries : list of str, or a table (pyarrow or pandas) with ``query_text`` (and ``query_id``)
            The queries' texts; no score or prompt is needed.
        query_ids : sequence, optional
            Ids for a list of texts (default: their positions, "0", "1", ...).

        Returns
        -------
        pyarrow.Table
            :data:`ASSIGNMENT_COLUMNS`: the recommended prompt id and text, where it comes from
            (``source``) and whether an LLM ever ran it (``verified``), its predicted effect on the
            score versus the static prompt with a 95% interval, and why it departs from the static
            prompt when it does.
        """
        ids, texts = _ids_and_texts(queries, query_ids)
        if self.query_features is None:
            raise ConfigError("this Policy has no query encoder: build it with Policy.load(run), or call "
                              "assign_features(X, query_ids) with query features in the bundle's PCA space")
        return self.assign_features(self.query_features(texts), ids)

    def assign_features(self, X: np.ndarray, query_ids: Sequence[Any]) -> pa.Table:
        """:meth:`assign` for queries whose features X (the bundle's query PCA space) are known."""
        return self.assignment(self.choose(X), query_ids)

    def choose(self, X: np.ndarray) -> Any:
        """The per-query choice for queries with features ``X``: a :class:`~cpo_engine.search.pool.PoolPolicy`
        over this policy's candidates, chosen by :func:`~cpo_engine.search.select.select_per_query` (every
        query gets the static prompt when the policy falls back); its ``effect``/``se`` are measured from the
        static prompt. :meth:`assignment` turns it into the assignment table; `cpo run` scores the same
        object on its held-out queries."""
        from dataclasses import replace

        from cpo_engine.kernels import dispatch as kernels
        from cpo_engine.search import CandidateScorer, pool_assign

        c, sel, X = self.candidates, self.state.selection, np.asarray(X, dtype=np.float64)
        scorer = CandidateScorer.from_selection(self.head, X, _no_new_texts, sel, self.state.T, device=self.device)
        pool = pool_assign(scorer, c.ids, c.texts, T_pool=c.T, incumbent=self.state.incumbent)
        if self.fallback or (self.live or {}).get("kind") == "static":
            pool = replace(pool, choice=np.full(len(pool.choice), self.state.incumbent, dtype=np.int64))
        if sel.reference != "incumbent":  # effects are reported versus the static prompt in every case
            eff, se = kernels.score_dense(scorer.phi, c.T - c.T[self.state.incumbent], self.head.coef, self.head.cov)
            pool = replace(pool, effect=eff, se=se)
        return pool

    def assignment(self, pool: Any, query_ids: Sequence[Any]) -> pa.Table:
        """The assignment table (:data:`ASSIGNMENT_COLUMNS`) of a choice made by :meth:`choose`."""
        return self._table(query_ids, pool.choice, pool.effect, pool.se, pool.z, pool.objective)

    def _table(self, query_ids: Sequence[Any], choice: np.ndarray, eff: np.ndarray, se: np.ndarray,
               z: float, objective: np.ndarray | None = None) -> pa.Table:
        c, rows = self.candidates, np.arange(len(choice))
        e, s = eff[rows, choice], se[rows, choice]
        lo, hi = e - _Z95 * s, e + _Z95 * s
        depart = choice != self.state.incumbent
        static = self.state.static_id
        # the bound the choice maximized (selection half, simultaneous multiplier z), not the reported e, s
        lcb = e - z * s if objective is None else objective[rows, choice]

        def rule(i: int) -> str:
            return (f"its lower bound effect - {z:.3g} x se = {lcb[i]:+.3f} is the best of the candidates" if z > 0
                    else "the best point estimate of the candidates")

        reasons = [None if not d else (
            f"predicted {e[i]:+.3f} over '{static}' on this query (95% CI {lo[i]:+.3f} to {hi[i]:+.3f}); {rule(i)}"
            + ("; unverified: no LLM has run this prompt yet" if c.source[choice[i]] == "searched" else ""))
            for i, d in enumerate(depart)]
        src = np.array(c.source, dtype=object)[choice]
        return pa.table({
            "query_id": pa.array([str(q) for q in query_ids], pa.string()),
            "recommended_prompt_id": pa.array([c.ids[j] for j in choice], pa.string()),
            "recommended_prompt_text": pa.array([c.texts[j] for j in choice], pa.string()),
            "source": pa.array(src, pa.string()),
            "verified": pa.array(src == "logged", pa.bool_()),
            "effect": pa.array(e), "effect_ci_low": pa.array(lo), "effect_ci_high": pa.array(hi),
            "departs_from_static": pa.array(depart, pa.bool_()), "reason": pa.array(reasons, pa.string()),
            "static_prompt_id": pa.array([static] * len(choice), pa.string()),
        }).replace_schema_metadata({"cpo_engine.policy": json.dumps(self.describe())})

    def describe(self) -> dict[str, Any]:
        """What produced an assignment (written into its Parquet metadata)."""
        n_searched = sum(1 for s in self.candidates.source if s == "searched")
        return {"model": self.source, "static_prompt_id": self.state.static_id,
                "candidates": {"logged": len(self.candidates.ids) - n_searched, "searched": n_searched},
                "selection": asdict(self.state.selection), "fallback": self.fallback, "problems": self.problems,
                **({"live": self.live} if self.live is not None else {})}

    def __repr__(self) -> str:
        d = self.describe()
        state = (f"fallback to '{self.state.static_id}': {len(self.problems)} failed check(s)" if self.fallback else
                 f"per-query, static prompt '{self.state.static_id}'")
        return (f"Policy({d['candidates']['logged']} logged + {d['candidates']['searched']} searched candidates, "
                f"z={self.state.selection.z:g}, {state}, model={self.source!r})")


def _with_static(state: PolicyState, prompt_id: str, text: str,
                 embed: Callable[[list[str]], np.ndarray]) -> PolicyState:
    """``state`` with the live static prompt as its incumbent (added, embedded, when the run did not log it:
    a searched prompt an LLM verified the night it went live)."""
    from dataclasses import replace

    for i, (p, t) in enumerate(zip(state.prompt_ids, state.prompt_texts)):
        if p == prompt_id and t == text:
            return replace(state, incumbent=i)
    T = np.vstack([state.T, np.asarray(embed([text]), dtype=np.float64).reshape(1, -1)])
    return replace(state, prompt_ids=[*state.prompt_ids, prompt_id], prompt_texts=[*state.prompt_texts, text], T=T,
                   train_mean=[*state.train_mean, float("nan")], incumbent=len(state.prompt_ids))


def _no_new_texts(texts: Sequence[str]) -> np.ndarray:
    raise ConfigError("the policy scores its own candidates only (their representations are saved)")


class _LazyQueryFeatures:
    """texts -> X with the bundle's encoder (loaded on first use, once) through the embedding cache."""

    def __init__(self, bundle: Any, embed: Any) -> None:
        self.bundle, self.embed, self._rep = bundle, embed, None

    def representer(self) -> Any:
        if self._rep is None:  # the bundle's encoder, refused when its weights or config are not the fitted ones
            self._rep = self.bundle.representer(self.embed)
        return self._rep

    def __call__(self, texts: list[str]) -> np.ndarray:
        from cpo_engine.embedding import text_embedder

        rep = self.representer()
        prefix = self.bundle.info.get("query_prefix") or ""
        return text_embedder(rep.encoder, rep.cache, self.bundle.query_pca, prefix)(texts)

    def prompt_embedder(self, texts: list[str]) -> np.ndarray:
        from cpo_engine.embedding import text_embedder

        rep = self.representer()
        prefix = self.bundle.info.get("prompt_prefix") or ""
        return text_embedder(rep.encoder, rep.cache, self.bundle.prompt_pca, prefix)(texts)


#: The columns of ``search/candidates.parquet`` that serving reads (and hashes); `cpo verify` adds others.
SEARCHED_COLUMNS = ("id", "text", "in_support", "objective")


def searched_candidates_sha256(table: pa.Table) -> str:
    """sha256 of what serving reads of a searched-candidates table: :data:`SEARCHED_COLUMNS`, row by row in
    the file's (ranked) order. Columns `cpo verify` adds later (its marks) do not change it."""
    import hashlib

    rows = table.select(list(SEARCHED_COLUMNS)).to_pylist()
    return hashlib.sha256(json.dumps(rows, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _searched_candidates(path: Path, state: PolicyState, n: int,
                         embed: Callable[[list[str]], np.ndarray]) -> tuple[list[str], list[str], np.ndarray]:
    """The run's best ``n`` searched candidates inside the trust region (logged prompts excluded), after
    checking the file against the hash policy.json records for it."""
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ConfigError(f"policy.candidates='searched' needs the run's searched candidates, but {path} does not "
                          "exist: pass the `cpo run` folder (not a `cpo fit` bundle), or use candidates='logged'")
    fix = "rerun `cpo run` (or restore the run folder from a copy), or serve with policy.candidates='logged'"
    if state.searched_sha256 is None:
        raise DataError(f"the bundle's {STATE_FILE} records no hash of the searched candidates: the file was not "
                        "written by the run that wrote this bundle (or by an older version), so what it would "
                        "recommend cannot be checked", source=str(path), fix=fix)
    try:
        table = pq.read_table(path, columns=list(SEARCHED_COLUMNS))
    except (OSError, ValueError, KeyError, pa.ArrowException) as exc:
        raise DataError(f"the searched candidates cannot be read (truncated or corrupted: {exc})", source=str(path),
                        fix=fix) from exc
    if searched_candidates_sha256(table) != state.searched_sha256:
        raise DataError(f"the searched candidates do not match the hash in the bundle's {STATE_FILE} "
                        "(searched_candidates_sha256): the file was edited, replaced or corrupted after the run wrote "
                        "it (an edited text would be recommended as the run's candidate)", source=str(path), fix=fix)
    t = table.to_pylist()
    logged = set(state.prompt_texts)
    rows = [r for r in t if r["in_support"] and r["text"] not in logged][:n]  # the file is ranked by objective
    if not rows:
        return [], [], np.zeros((0, state.T.shape[1]))
    texts = [r["text"] for r in rows]
    return [r["id"] for r in rows], texts, np.asarray(embed(texts), dtype=np.float64)


def _ids_and_texts(queries: Any, query_ids: Sequence[Any] | None) -> tuple[list[str], list[str]]:
    if isinstance(queries, str):
        raise DataError("pass a list of query texts (or a table with query_text), not a single string",
                        fix="wrap it: policy.assign([text])")
    if hasattr(queries, "column_names") or hasattr(queries, "columns"):  # pyarrow or pandas table
        table = queries if hasattr(queries, "column_names") else pa.Table.from_pandas(queries, preserve_index=False)
        if "query_text" not in table.column_names:
            raise DataError(f"the table has no 'query_text' column (found: {', '.join(table.column_names)})",
                            column="query_text", fix="name the text column query_text")
        texts = [str(t) for t in table.column("query_text").to_pylist()]
        ids = table.column("query_id").to_pylist() if "query_id" in table.column_names else None
    else:
        texts, ids = [str(t) for t in queries], None
    ids = query_ids if query_ids is not None else ids
    ids = [str(i) for i in (ids if ids is not None else range(len(texts)))]
    if len(ids) != len(texts):
        raise DataError(f"{len(ids)} query ids for {len(texts)} texts", fix="pass one id per text")
    from cpo_engine.data.queries import check_unique_ids

    check_unique_ids(ids)
    return ids, texts


__all__ = ["Policy", "PolicyState", "UnreliablePolicyWarning", "learn_state", "reliability_problems", "fetch_run",
           "save_fitted_policy", "heterogeneity_p_value", "table_state", "searched_from_result",
           "searched_candidates_sha256", "ASSIGNMENT_COLUMNS", "SEARCHED_COLUMNS", "SOURCES", "STATE_FILE"]
