"""Cross-fitted Double Machine Learning reward model (CPO, arXiv 2602.01711).

Partially linear model with a multi-dimensional continuous treatment (the prompt representation):

    Y = g(X) + theta(X)^T T + e,      E[e | X, T] = 0,      theta(X) = B^T phi(X)

Stage 1 fits the nuisances ``E[Y|X]`` and ``E[T|X]`` with K-fold cross-fitting grouped by query.
Stage 2 regresses ``Y - E[Y|X]`` on ``phi(X) (x) (T - E[T|X])`` (Robinson 1988; Chernozhukov et al.
2018), with covariance clustered by query. This is econml's ``LinearDML`` with a torch path that runs
on CUDA when present, grouped cross-fitting, diagnostics and a linear head for batched search.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import norm, t as student_t

from cpo_engine.causal._params import ParamsMixin
from cpo_engine.causal._checks import as_float_array, check_fit_inputs, group_codes, make_folds
from cpo_engine.causal._crossfit import assemble, can_use_stats, query_predictions, run_folds
from cpo_engine.causal.diagnostics import compute_diagnostics
from cpo_engine.causal.featurize import Featurizer, as_featurizer  # noqa: F401 (annotations)
from cpo_engine.causal.head import LinearHead
from cpo_engine.causal._final_stats import QueryMoments, cluster_rows
from cpo_engine.causal.inference import ClusterPhi, fit_final_stage
from cpo_engine.causal.nuisances import check_nuisance_name
from cpo_engine.exceptions import ConfigError, DataError, NotFittedError

INTERVALS = ("normal", "t")


class CausalRewardModel(ParamsMixin):
    """Cross-fitted linear DML: the effect of prompt features T on the score, given query features X.

    Parameters
    ----------
    model_y, model_t : str or estimator
        Nuisance regressors for ``E[Y|X]`` and ``E[T|X]``: ``"ridge"`` (torch closed form with a
        grouped-CV penalty), ``"mlp"`` (torch), ``"hgb"``, ``"lgbm"``, ``"cuml_ridge"`` or any
        scikit-learn regressor (cloned per fold).
    featurizer : {"linear", "constant", "poly2"} or Featurizer
        ``phi`` in ``theta(X) = B^T phi(X)``; always includes a constant column.
    cv : int, splitter or list of (train, test) index pairs
        Cross-fitting folds. An int assigns whole queries (``groups``) to folds at random.
    final_alpha : float or "cv"
        Scale-free ridge penalty on the heterogeneity (non-constant rows of ``B``) of the point
        estimate ``coef_``; the average effect is never shrunk (0 = OLS, econml parity). ``"cv"`` (the
        default, as in :class:`~cpo_engine.causal.config.CausalConfig`) picks it from
        :data:`~cpo_engine.causal.inference.ALPHA_GRID` by grouped CV of the R-loss on the same folds.
        Intervals, standard errors and the :meth:`linear_head` never use the penalty: they come from
        the unpenalized fit (``inference_coef_``, ``cov_``), because the sandwich around a shrunk
        estimate does not cover (docs/causal.md, "Intervals").
    cov_type : {"cluster", "HC1", "HC0", "nonrobust"}
        Covariance of the final stage; "cluster" clusters by ``groups`` (HC1-like when none given).
    interval : {"normal", "t"}
        Quantiles of intervals: normal, or Student t with (clusters - 1) degrees of freedom (a
        small-cluster correction: wider when there are few queries).
    overlap_threshold : float
        Warn when less than this share of a prompt feature's variance is left after ``E[T|X]``.
    min_groups_per_fold : int
        Fewest queries a cross-fitting test fold may hold.
    backend : {"serial", "ray"}
        Run the folds in this process or as Ray tasks (same fold function, identical results).
    device : {"auto", "cpu", "cuda"}
        Where torch nuisances and the final stage run.
    random_state : int
        Seed for fold assignment and nuisances.
    ray_options : dict, optional
        ``num_cpus``/``num_gpus`` per Ray fold task.
    stats_crossfit : bool
        With ridge nuisances on the serial backend, compute all folds from one pass of sufficient
        statistics (same estimates up to float rounding, several times faster).

    Attributes
    ----------
    coef_ : ndarray (d_phi, d_T)
        ``B`` (shrunk by ``final_alpha_``); ``coef_[0]`` is the effect for ``phi = 1`` (the constant
        column). :meth:`effect` and :meth:`const_marginal_effect` use it.
    inference_coef_ : ndarray (d_phi, d_T)
        The unpenalized ``B`` (equal to ``coef_`` when ``final_alpha_ == 0``): the center of intervals.
    cov_ : ndarray (d_phi * d_T, d_phi * d_T)
        Covariance of ``vec(inference_coef_)`` (row-major).
    split_ : dict or None
        Unpenalized fits on two seeded, disjoint halves of the queries: ``{"select": (coef, cov),
        "estimate": (coef, cov)}``; honest selection chooses with one and reports with the other.
    t_ref_ : ndarray (d_T,)
        Reference prompt representation for :meth:`linear_head` (mean of the fitted T).
    y_res_, t_res_ : ndarray
        Out-of-fold residuals, kept so :meth:`refit_final` needs no nuisance refit.
    diagnostics_ : FitDiagnostics
        Nuisance R^2, overlap, ESS, conditioning and warnings of the last fit.
    prompts_T_, prompt_ids_ : ndarray (n_prompts, d_T) or None, list of str or None
        The prompts of the fit (the distinct rows of T when rows repeat them; a workflow records the
        table's prompts with their ids): what :meth:`prompt_effects` and :meth:`summary` tabulate.
    phi_mean_ : ndarray (d_phi,)
        Mean of ``phi(X)`` over the fitted queries: per-prompt effects average over them.

    Examples
    --------
    Four prompts (2-d representations) logged on 200 queries; the second helps most where the
    query's second feature is large:

    >>> import numpy as np
    >>> from cpo_engine import CausalRewardModel
    >>> rng = np.random.default_rng(0)
    >>> prompts = np.array([[0., 0.], [1., 0.], [0., 1.], [1., 1.]])
    >>> x = rng.normal(size=(200, 2))
    >>> q, a = np.repeat(np.arange(200), 4), np.tile(np.arange(4), 200)  # query and prompt of each row
    >>> X, T = x[q], prompts[a]
    >>> Y = X[:, 0] + T @ [0.3, -0.2] + 0.5 * X[:, 1] * T[:, 0] + rng.normal(scale=0.3, size=len(q))
    >>> model = CausalRewardModel(cv=3, device="cpu").fit(Y, T, X=X, groups=q)
    >>> model.prompt_effects(prompt_ids=["a", "b", "c", "d"], reference="a").to_pandas().round(2)
      prompt_id  effect    se  ci_low  ci_high
    0         a    0.00  0.00    0.00     0.00
    1         b    0.33  0.02    0.29     0.37
    2         c   -0.19  0.02   -0.22    -0.15
    3         d    0.14  0.03    0.09     0.19

    The effect of moving from prompt a to b on two new queries, and its 95% interval:

    >>> X_new = np.array([[0., -1.], [0., 1.]])
    >>> model.effect(X_new, T0=prompts[0], T1=prompts[1]).round(2).tolist()
    [-0.18, 0.8]
    >>> lo, hi = model.effect_interval(X_new, T0=prompts[0], T1=prompts[1])
    >>> bool((lo < 0.8).all() and (hi > -0.2).all())
    True

    scikit-learn's parameter protocol: ``clone`` gives an unfitted copy with the same parameters.

    >>> from sklearn.base import clone
    >>> twin = clone(model).set_params(cv=5)
    >>> twin.get_params()["cv"], hasattr(twin, "coef_")
    (5, False)
    """

    def __init__(self, model_y: Any = "ridge", model_t: Any = "ridge",
                 featurizer: "str | Featurizer" = "linear", cv: Any = 5, final_alpha: "float | str" = "cv",
                 cov_type: str = "cluster", overlap_threshold: float = 0.05,
                 min_groups_per_fold: int = 2, backend: str = "serial", device: str = "auto",
                 random_state: int = 0, ray_options: dict | None = None,
                 stats_crossfit: bool = True, interval: str = "normal") -> None:
        self.model_y = model_y
        self.model_t = model_t
        self.featurizer = featurizer
        self.cv = cv
        self.final_alpha = final_alpha
        self.cov_type = cov_type
        self.overlap_threshold = overlap_threshold
        self.min_groups_per_fold = min_groups_per_fold
        self.backend = backend
        self.device = device
        self.random_state = random_state
        self.ray_options = ray_options
        self.stats_crossfit = stats_crossfit
        self.interval = interval

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={_short(v)}" for k, v in self.get_params(deep=False).items())
        if not hasattr(self, "coef_"):
            return f"{type(self).__name__}({params}) [not fitted]"
        fitted = f"d_X={self.n_features_in_}, d_T={self.d_t_}, d_phi={self.coef_.shape[0]}, " \
                 f"final_alpha_={self.final_alpha_!r}, cov_type_={self.cov_type_!r}"
        diag = getattr(self, "diagnostics_", None)
        if diag is not None:
            fitted = f"n_rows={diag.n_rows}, n_groups={diag.n_groups}, " + fitted
        return f"{type(self).__name__}({params}) [fitted: {fitted}]"

    # ------------------------------------------------------------------ fitting
    def fit(self, Y: Any, T: Any, *, X: Any, groups: Any = None, sample_weight: Any = None,
            t_ref: Any = None, t_hat: Any = None) -> "CausalRewardModel":
        """Cross-fit the nuisances, then the final stage; returns self.

        Parameters
        ----------
        Y : array (n,)
            Scores.
        T : array (n, d_T)
            Prompt representation of each row.
        X : array (n, d_X)
            Query representation of each row.
        groups : array (n,), optional
            Query id of each row: folds never split a query and covariance is clustered by it.
        sample_weight : array (n,), optional
            Row weights for the nuisances (when they take them) and the final stage.
        t_ref : array (d_T,), optional
            Reference prompt representation; defaults to the mean of T.
        t_hat : array (n, d_T), optional
            Known ``E[T | query]`` under the logging policy (``sum_p pi(p|q) T_p``). When given,
            ``model_t`` is not fitted and T is residualized on it, which identifies the effect even
            when the policy depends on query traits that X does not capture (the policy must be the
            one that produced the logs).
        """
        from cpo_engine.utils import resolve_device

        self._check_nuisance_specs()
        Y, T, X, groups, w = check_fit_inputs(Y, T, X, groups, sample_weight)
        if groups is not None:  # dense int codes: same partition, faster downstream
            groups = group_codes(groups, len(Y))
        self.device_ = resolve_device(self.device)
        self.folds_ = make_folds(self.cv, len(Y), groups, self.random_state, self.min_groups_per_fold)
        # CPO logs repeat a query's X on each of its rows: then nuisances and final stage run on
        # per-query statistics (same numbers, no per-row design)
        self._cluster_first = first = None if groups is None else cluster_rows(X, groups, int(groups.max()) + 1)
        moments = None if first is None else QueryMoments.build(Y, T, w, groups, len(first))
        data = {"X": X, "Y": Y, "T": T, "groups": groups, "w": None if sample_weight is None else w,
                "cluster_first": first, "query_sums": None if moments is None else moments.sums()}
        model_t = self.model_t
        if t_hat is not None:
            data["t_hat"], model_t = self._check_t_hat(t_hat, T), None
        backend = self.backend
        if backend == "serial" and self.stats_crossfit and can_use_stats(data, self.folds_, self.model_y, model_t):
            backend = "stats"
        self.crossfit_backend_ = backend
        results = run_folds(data, self.folds_, self.model_y, model_t, self.random_state,
                            self.device_, backend, self.ray_options)
        if first is not None and all(r.queries is not None for r in results):  # per-query predictions
            pg = query_predictions(results, None, None, first, groups)
            rows = pg[groups]
            y_pred, t_pred = rows[:, 0], rows[:, 1:]
        else:
            y_pred, t_pred = assemble(results, len(Y), T.shape[1], groups)
            pg = None if first is None else query_predictions(results, y_pred, t_pred, first, groups)
        self.models_y_ = [r.model_y for r in results]
        self.models_t_ = [r.model_t for r in results if r.model_t is not None]
        self.y_res_, self.t_res_ = Y - y_pred, T - t_pred
        self._final_moments = None if pg is None else moments.residual(pg)
        self._Y, self._T, self._X, self._w, self._groups = Y, T, X, w, groups
        self.t_ref_ = T.mean(0) if t_ref is None else as_float_array(t_ref, "t_ref", (1,))
        self.n_features_in_, self.d_t_ = X.shape[1], T.shape[1]
        # the prompts (distinct rows of T, when rows repeat them) for summary's per-prompt effects
        self.prompts_T_, self.prompt_ids_ = distinct_rows(T, max_rows=min(10_000, len(T) // 2)), None
        return self._fit_final(self.featurizer, self.final_alpha, self.cov_type)

    def _check_nuisance_specs(self) -> None:
        """Unknown nuisance names fail here, before any fold runs (inside a Ray task, too late)."""
        for spec, key in ((self.model_y, "model_y"), (self.model_t, "model_t")):
            if isinstance(spec, str):
                check_nuisance_name(spec, key)

    @staticmethod
    def _check_t_hat(t_hat: Any, T: np.ndarray) -> np.ndarray:
        t_hat = as_float_array(t_hat, "t_hat", (1, 2)).reshape(len(t_hat), -1)
        if t_hat.shape != T.shape:
            raise DataError(f"t_hat must have the shape of T {T.shape}, got {t_hat.shape}")
        return t_hat

    def refit_final(self, featurizer: "str | Featurizer | None" = None,
                    final_alpha: "float | str | None" = None, cov_type: str | None = None) -> "CausalRewardModel":
        """Refit only the final stage on the kept residuals (new phi, penalty or covariance)."""
        self._check_fitted("y_res_")
        if getattr(self, "_X", None) is None:
            raise NotFittedError("CausalRewardModel (loaded without residuals; refit with fit)")
        return self._fit_final(
            self.featurizer_ if featurizer is None else featurizer,
            self.final_alpha_ if final_alpha is None else final_alpha,
            self.cov_type_ if cov_type is None else cov_type,
        )

    def _fit_final(self, featurizer, final_alpha: "float | str", cov_type: str) -> "CausalRewardModel":
        if final_alpha != "cv" and (isinstance(final_alpha, bool) or not isinstance(final_alpha, (int, float))
                                    or final_alpha < 0):
            raise ConfigError(f"final_alpha must be a number >= 0 or 'cv', got {final_alpha!r}")
        if self.interval not in INTERVALS:
            raise ConfigError(f"interval must be one of {INTERVALS}, got {self.interval!r}")
        feat = as_featurizer(featurizer).fit(self._X)
        first = getattr(self, "_cluster_first", None)
        phi = feat.transform(self._X) if first is None else ClusterPhi(feat.transform(self._X[first]))
        stage = fit_final_stage(phi, self.t_res_, self.y_res_, folds=self.folds_, groups=self._groups,
                                sample_weight=self._w, alpha=final_alpha, cov_type=cov_type,
                                split_seed=self.random_state, device=self.device_,
                                cluster_moments=getattr(self, "_final_moments", None) if first is not None else None)
        fit = stage.inference
        self.featurizer_, self.final_alpha_, self.cov_type_ = feat, stage.alpha, cov_type
        # mean of phi over the fitted queries (each once): what per-prompt average effects average over
        self.phi_mean_ = feat.transform(self._X if first is None else self._X[first]).mean(0)
        self.final_alpha_cv_, self.final_path_ = stage.alpha_cv, stage.path
        self.coef_, self.inference_coef_, self.cov_ = stage.coef, fit.coef, fit.cov
        self.n_clusters_ = fit.n_clusters
        self.split_ = None if stage.halves is None else {
            name: (h.coef, h.cov) for name, h in zip(("select", "estimate"), stage.halves)}
        fold_groups = [self._n_groups(te) for _, te in self.folds_]
        self.diagnostics_ = compute_diagnostics(
            self._Y, self._T, self.y_res_, self.t_res_, self._w, n_groups=fit.n_clusters
            if self._groups is not None else len(self._Y), fold_groups=fold_groups,
            gram_condition=fit.gram_condition, final_mse=fit.mse, cov_type=cov_type,
            overlap_threshold=self.overlap_threshold, n_params=int(np.size(fit.coef)))
        return self

    def _n_groups(self, rows: np.ndarray) -> int:
        return len(rows) if self._groups is None else int(np.count_nonzero(np.bincount(self._groups[rows])))

    # ------------------------------------------------------------------ effects
    def _check_fitted(self, attr: str = "coef_") -> None:
        if not hasattr(self, attr):
            raise NotFittedError(type(self).__name__)

    def _phi(self, X: Any) -> np.ndarray:
        self._check_fitted()
        return self.featurizer_.transform(as_float_array(X, "X", (2,)))

    def _t(self, T: Any, n: int, name: str) -> np.ndarray:
        T = np.broadcast_to(np.asarray(T, dtype=np.float64), (n, self.d_t_)) \
            if np.ndim(T) <= 1 else as_float_array(T, name, (2,))
        if T.shape != (n, self.d_t_):
            raise DataError(f"{name} must have shape ({n}, {self.d_t_}) or ({self.d_t_},), got {T.shape}")
        return T

    def const_marginal_effect(self, X: Any) -> np.ndarray:
        """``theta(X)``: (n, d_T), the score change per unit of each prompt feature."""
        return self._phi(X) @ self.coef_

    def marginal_effect(self, T: Any, X: Any) -> np.ndarray:
        """Same as :meth:`const_marginal_effect` (the model is linear in T)."""
        return self.const_marginal_effect(X)

    def effect(self, X: Any, T0: Any = 0.0, T1: Any = 1.0) -> np.ndarray:
        """Effect on the score of moving each row's prompt from ``T0`` to ``T1``: (n,)."""
        phi = self._phi(X)
        dt = self._t(T1, len(phi), "T1") - self._t(T0, len(phi), "T0")
        return ((phi @ self.coef_) * dt).sum(1)

    def effect_stderr(self, X: Any, T0: Any = 0.0, T1: Any = 1.0) -> np.ndarray:
        """Standard error of the effect from ``cov_`` (the unpenalized fit's covariance): (n,)."""
        phi = self._phi(X)
        dt = self._t(T1, len(phi), "T1") - self._t(T0, len(phi), "T0")
        v = (phi[:, :, None] * dt[:, None, :]).reshape(len(phi), -1)
        return np.sqrt(np.clip(np.einsum("ij,jk,ik->i", v, self.cov_, v), 0.0, None))

    def _quantile(self, alpha: float) -> float:
        """Two-sided ``1 - alpha`` quantile: normal, or t with (clusters - 1) dof (``interval="t"``)."""
        if getattr(self, "interval", "normal") == "t":
            return float(student_t.ppf(1 - alpha / 2, max(self._n_clusters() - 1, 1)))
        return float(norm.ppf(1 - alpha / 2))

    def _n_clusters(self) -> int:
        n = getattr(self, "n_clusters_", None)
        return int(n) if n is not None else int(self.diagnostics_.n_groups)

    def effect_interval(self, X: Any, T0: Any = 0.0, T1: Any = 1.0, *,
                        alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """``1 - alpha`` confidence interval of the effect: (lower, upper).

        Centered at the unpenalized estimate (``inference_coef_``), which differs from :meth:`effect`
        when ``final_alpha_ > 0``: a shrunk estimate's sandwich interval does not cover.
        """
        phi = self._phi(X)
        dt = self._t(T1, len(phi), "T1") - self._t(T0, len(phi), "T0")
        est = ((phi @ self._inference_coef()) * dt).sum(1)
        se, q = self.effect_stderr(X, T0, T1), self._quantile(alpha)
        return est - q * se, est + q * se

    def const_marginal_effect_interval(self, X: Any, *, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
        """Interval of ``theta(X)`` (centered at the unpenalized fit): (lower, upper), each (n, d_T)."""
        phi = self._phi(X)
        cov4 = self.cov_.reshape(phi.shape[1], self.d_t_, phi.shape[1], self.d_t_)
        var = np.einsum("if,ftgt,ig->it", phi, cov4, phi)
        est, q = phi @ self._inference_coef(), self._quantile(alpha)
        se = np.sqrt(np.clip(var, 0.0, None))
        return est - q * se, est + q * se

    def _inference_coef(self) -> np.ndarray:
        coef = getattr(self, "inference_coef_", None)
        return self.coef_ if coef is None else coef

    def effect_grid(self, X: Any, T: Any) -> np.ndarray:
        """Point effect (``coef_``) of every candidate prompt (rows of T) vs ``t_ref_`` on every query:
        (n_q, n_c)."""
        phi = self._phi(X)
        return phi @ self.coef_ @ (as_float_array(T, "T", (2,)) - self.t_ref_).T

    def linear_head(self) -> LinearHead:
        """The :class:`LinearHead` that batched search scores with: the unpenalized fit (``coef`` and
        ``cov`` give valid intervals), the penalized point estimate as ``point_coef``, and the two
        half-sample heads (``split``) for honest selection when they were fitted."""
        self._check_fitted()
        split = getattr(self, "split_", None)
        halves = None if not split else tuple(
            LinearHead(coef=c.copy(), cov=v.copy(), featurize=self.featurizer_.transform, t_ref=self.t_ref_.copy())
            for c, v in (split["select"], split["estimate"]))
        return LinearHead(coef=self._inference_coef().copy(), cov=self.cov_.copy(),
                          featurize=self.featurizer_.transform, t_ref=self.t_ref_.copy(),
                          point_coef=self.coef_.copy(), split=halves)

    # ------------------------------------------------------------------ scoring
    def nuisance_predict(self, X: Any, need_t: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """``E[Y|X]`` and ``E[T|X]`` on new rows, averaged over the fold models."""
        self._check_fitted("models_y_")
        if not self.models_y_ or (need_t and not self.models_t_):
            raise NotFittedError("CausalRewardModel (its nuisances were not saved, or E[T|X] was "
                                 "given as t_hat at fit)")
        X = as_float_array(X, "X", (2,))
        y = np.mean([np.asarray(m.predict(X)).reshape(len(X)) for m in self.models_y_], axis=0)
        if not need_t:
            return y, None
        t = np.mean([np.asarray(m.predict(X)).reshape(len(X), -1) for m in self.models_t_], axis=0)
        return y, t

    def score(self, Y: Any, T: Any, *, X: Any, sample_weight: Any = None, t_hat: Any = None) -> float:
        """Mean squared error of the final stage on new data (lower is better; econml's score).

        Pass ``t_hat`` (known E[T | query]) when the model was fitted with one.
        """
        Y, T, X, _, w = check_fit_inputs(Y, T, X, None, sample_weight)
        if t_hat is not None or not self.models_t_:
            if t_hat is None:
                raise DataError("this model was fitted with a known t_hat: pass t_hat to score")
            y_hat, t_hat = self.nuisance_predict(X, need_t=False)[0], self._check_t_hat(t_hat, T)
        else:
            y_hat, t_hat = self.nuisance_predict(X)
        pred = ((self._phi(X) @ self.coef_) * (T - t_hat)).sum(1)
        return float(np.average((Y - y_hat - pred) ** 2, weights=w))

    def prompt_effects(self, T: Any = None, prompt_ids: Any = None, *, X: Any = None, reference: Any = None,
                       alpha: float = 0.05) -> Any:
        """Average effect of each prompt on the score versus a reference prompt, over queries: one row
        per prompt, with its standard error and ``1 - alpha`` interval (a ``pyarrow.Table``: prompt_id,
        effect, se, ci_low, ci_high; ``.to_pandas()`` for a DataFrame).

        The effect of prompt ``p`` is ``mean_q theta(X_q)^T (T_p - T_ref)``, centred at the unpenalized fit
        (``inference_coef_``, as the intervals; conditional on the queries averaged over).

        Parameters
        ----------
        T : array (n_prompts, d_T), optional
            Prompt representations; default the prompts of the fit (``prompts_T_``: the distinct rows of
            the fitted T, or the ones a workflow recorded with their ids).
        prompt_ids : sequence of str, optional
            Names of the rows of T; default the recorded ``prompt_ids_``, else ``"p0"``, ``"p1"``, ...
        X : array (n_queries, d_X), optional
            Queries to average over (each row once); default the fitted queries (``phi_mean_``).
        reference : int, str or array (d_T,), optional
            The prompt effects are measured from: a row of T (index or prompt id) or a representation;
            default ``t_ref_`` (the mean fitted prompt representation, unless ``fit`` was given one).
        alpha : float
            Intervals are ``1 - alpha``.
        """
        import pyarrow as pa

        self._check_fitted()
        T, ids = self._prompts(T, prompt_ids)
        if X is None:
            mbar = getattr(self, "phi_mean_", None)
            if mbar is None:
                raise DataError("this model does not record its fitted queries (saved by an older version): pass X")
        else:
            mbar = self._phi(X).mean(0)
        ref = self._reference(reference, T, ids)
        dt = T - ref  # (n_p, d_T)
        v = (np.asarray(mbar)[None, :, None] * dt[:, None, :]).reshape(len(T), -1)
        est = v @ self._inference_coef().ravel()
        se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", v, self.cov_, v), 0.0, None))
        q = self._quantile(alpha)
        return pa.table({"prompt_id": pa.array(ids, pa.string()), "effect": est, "se": se,
                         "ci_low": est - q * se, "ci_high": est + q * se})

    def _prompts(self, T: Any, prompt_ids: Any) -> tuple[np.ndarray, list[str]]:
        recorded = getattr(self, "prompt_ids_", None)
        if T is None:
            T = getattr(self, "prompts_T_", None)
            if T is None:
                raise DataError("this model does not record its prompts (saved by an older version): pass T")
            prompt_ids = recorded if prompt_ids is None and recorded is not None and len(recorded) == len(T) \
                else prompt_ids
        T = as_float_array(T, "T", (2,))
        if T.shape[1] != self.d_t_:
            raise DataError(f"T must have {self.d_t_} columns (the model's d_T), got {T.shape[1]}")
        ids = [f"p{i}" for i in range(len(T))] if prompt_ids is None else [str(p) for p in prompt_ids]
        if len(ids) != len(T):
            raise DataError(f"{len(ids)} prompt ids for {len(T)} rows of T", fix="pass one id per prompt")
        return T, ids

    def _reference(self, reference: Any, T: np.ndarray, ids: list[str]) -> np.ndarray:
        if reference is None:
            return np.asarray(self.t_ref_, dtype=np.float64)
        if isinstance(reference, str):
            if reference not in ids:
                raise DataError(f"reference {reference!r} is not one of the prompt ids ({', '.join(ids[:10])})")
            return T[ids.index(reference)]
        if isinstance(reference, (int, np.integer)) and not isinstance(reference, bool):
            return T[int(reference)]
        ref = as_float_array(reference, "reference", (1,))
        if ref.shape != (self.d_t_,):
            raise DataError(f"reference must be a prompt index, id or a ({self.d_t_},) representation")
        return ref

    def summary(self, alpha: float = 0.05, max_rows: int = 50, *, T: Any = None, prompt_ids: Any = None,
                X: Any = None, reference: Any = None) -> str:
        """What the fit says, as text: the per-prompt average effects versus the reference with standard
        errors and ``1 - alpha`` intervals (:meth:`prompt_effects`; ``T``, ``prompt_ids``, ``X`` and
        ``reference`` are passed to it), then the coefficients of ``theta(X) = B^T phi(X)`` in the PCA
        coordinates (row 0 of phi is the constant: the average effect of each prompt feature), then the
        diagnostics. ``max_rows`` caps each table."""
        self._check_fitted()
        z = self._quantile(alpha)
        head = [f"{type(self).__name__}: {self.diagnostics_.n_rows} rows, {self.diagnostics_.n_groups} queries; "
                f"final_alpha_={self.final_alpha_!r} (point estimates; intervals unpenalized)"]
        return "\n".join(head + self._prompt_lines(alpha, max_rows, T, prompt_ids, X, reference)
                         + self._coef_lines(alpha, z, max_rows) + [self.diagnostics_.summary()])

    def _prompt_lines(self, alpha: float, max_rows: int, T: Any, prompt_ids: Any, X: Any, reference: Any) -> list[str]:
        if T is None and getattr(self, "prompts_T_", None) is None or X is None and getattr(self, "phi_mean_", None) is None:
            return []
        eff = self.prompt_effects(T, prompt_ids, X=X, reference=reference, alpha=alpha).to_pydict()
        ref = "t_ref_ (the mean fitted prompt)" if reference is None else repr(reference)
        ids = eff["prompt_id"]
        width = max(len(i) for i in ids) if ids else 0
        rows = [f"  {p:<{width}}  {e:+.4f} ({s:.4f}) [{lo:+.4f}, {hi:+.4f}]" for p, e, s, lo, hi in
                zip(ids, eff["effect"], eff["se"], eff["ci_low"], eff["ci_high"])]
        more = [f"  ... {len(rows) - max_rows} more prompts (prompt_effects())"] if len(rows) > max_rows else []
        return ([f"per-prompt average effect vs {ref}: effect (se) [{1 - alpha:.0%} CI]"]
                + rows[:max_rows] + more)

    def _coef_lines(self, alpha: float, z: float, max_rows: int) -> list[str]:
        se = np.sqrt(np.clip(np.diag(self.cov_), 0, None)).reshape(self.coef_.shape)
        b = self._inference_coef()  # the unpenalized estimate the se belongs to (coef_ may be shrunk)
        rows = [f"phi[{f}] x T[{t}]: {b[f, t]:+.4f} ({se[f, t]:.4f}) "
                f"[{b[f, t] - z * se[f, t]:+.4f}, {b[f, t] + z * se[f, t]:+.4f}]"
                for f in range(b.shape[0]) for t in range(self.d_t_)]
        more = [f"... {len(rows) - max_rows} more rows (inference_coef_, cov_)"] if len(rows) > max_rows else []
        return [f"coefficients (PCA coordinates): unpenalized coefficient (se) [{1 - alpha:.0%} CI]"] + rows[:max_rows] + more

    # ------------------------------------------------------------------ persistence
    def save(self, path: Any, provenance: dict | None = None, *, keep_residuals: bool = False) -> Any:
        """Write ``model.json`` + ``model.safetensors`` into directory ``path`` (no pickle)."""
        from cpo_engine.causal.persist import save_model

        return save_model(self, path, provenance or {}, keep_residuals=keep_residuals)

    @classmethod
    def load(cls, path: Any, expect: dict | None = None) -> "CausalRewardModel":
        """Load a saved model; refuses one whose embedder or PCA differ from ``expect``."""
        from cpo_engine.causal.persist import load_saved

        return load_saved(path, expect, cls)


def load_model(path: Any, expect: dict | None = None) -> CausalRewardModel:
    """Load a model saved by :meth:`CausalRewardModel.save`, checking provenance against ``expect``."""
    return CausalRewardModel.load(path, expect)


def distinct_rows(T: np.ndarray, max_rows: int = 10_000) -> np.ndarray | None:
    """The distinct rows of T in first-seen order (the prompts of CPO logs: one representation each); None when
    there are more than ``max_rows`` (a continuous treatment, not a set of prompts). Rows are told apart by a
    fixed random projection (one sort of n floats, not of n x d_T)."""
    T = np.asarray(T, dtype=np.float64)
    if len(T) == 0:
        return None
    key = T @ np.random.default_rng(0).standard_normal(T.shape[1])
    _, first = np.unique(key, return_index=True)
    if len(first) > max_rows:
        return None
    return T[np.sort(first)].copy()


def _short(value: Any) -> str:
    """A parameter for ``repr``: literals as they are, estimators by class, fold lists by count."""
    if isinstance(value, (str, int, float, bool, type(None))):
        return repr(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], tuple):
        return f"<{len(value)} explicit folds>"
    if isinstance(value, dict) or hasattr(value, "get_params"):  # scikit-learn estimators print their settings
        return repr(value)
    return f"<{type(value).__name__}>"
