"""Statistics of measured verification: paired intervals, the labelled (measured) value of a prompt or a
policy and its uplift, the verdict and the promotion rule, and how predicted uplifts calibrate against
measured ones. Pure functions of arrays; `cpo verify`, `cpo nightly` and `cpo loop`
(:mod:`cpo_engine.workflows.verify`) and the pool evaluation (:mod:`cpo_engine.search.pool`) call them."""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np

from cpo_engine.causal.evidence import LabelledValue
from cpo_engine.exceptions import DataError

#: the two-sided 95% normal quantile
Z95 = NormalDist().inv_cdf(0.975)


def paired_interval(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Mean of ``a - b`` over paired units with a normal-approximation interval."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = d.size
    if n < 2:
        raise DataError(f"a paired interval needs at least 2 queries with both outcomes, got {n}")
    se = float(d.std(ddof=1) / np.sqrt(n))
    zq = NormalDist().inv_cdf(0.5 + level / 2)
    return {"diff": float(d.mean()), "se": se, "ci_low": float(d.mean() - zq * se),
            "ci_high": float(d.mean() + zq * se), "n": int(n), "level": level}


def labelled(values: np.ndarray, base: np.ndarray | None, evidence: str, method: str) -> LabelledValue | None:
    """Mean of ``values`` (minus ``base``, paired by query) with its 95% interval, labelled.

    The interval is the normal one computed with two pseudo-queries added at the ends of the score
    range (0 and 1 for a value, -1 and +1 for a difference; Agresti-Min style). Graded answers are
    often identical across prompts, so few queries differ; the plain interval then collapses to a
    point (all differences 0 gives "+0.000 (+0.000 to +0.000)") and misses a small true uplift most
    of the time (bench/bench_verify_mc.py). The value itself is the plain mean.
    """
    a = np.asarray(values, dtype=np.float64)
    b = np.zeros_like(a) if base is None else np.asarray(base, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:
        return None
    d = a[ok] - b[ok]
    top = max(1.0, float(np.max(np.abs(d))))
    ends = np.array([-top, top]) if base is not None else np.array([min(0.0, float(d.min())), max(1.0, float(d.max()))])
    aug = np.concatenate([d, ends])
    r = paired_interval(aug, np.zeros_like(aug))
    return LabelledValue(float(d.mean()), r["ci_low"], r["ci_high"], evidence, method, n=int(ok.sum()))


def calibration(pred: np.ndarray, pred_se: np.ndarray, meas: np.ndarray,
                meas_se: np.ndarray | None = None) -> dict[str, Any]:
    """How predicted uplifts (vs the baseline) match measured ones over the non-baseline arms.

    ``interval_coverage``: the share of measured uplifts inside the predicted 95% intervals. A measured uplift
    is itself an estimate (se ``meas_se``), so even exact intervals cover it less than 95% of the time;
    ``interval_coverage_with_measurement_error`` is the share with ``|pred - meas| <= 1.96 sqrt(pred_se^2 +
    meas_se^2)``, which is 95% when the predicted intervals are exact (tests/test_workflow_verify.py)."""
    from scipy.stats import kendalltau, spearmanr

    ok = np.isfinite(pred) & np.isfinite(meas)
    p, s, m = pred[ok], pred_se[ok], meas[ok]
    out: dict[str, Any] = {"n_prompts": int(ok.sum()), "spearman": None, "kendall_tau": None}
    if ok.sum() == 0:
        return out
    if ok.sum() >= 3 and np.ptp(p) > 0 and np.ptp(m) > 0:
        out["spearman"] = float(spearmanr(p, m).statistic)
        out["kendall_tau"] = float(kendalltau(p, m).statistic)
    has_se = np.isfinite(s)
    covered = (p - Z95 * s <= m) & (m <= p + Z95 * s)
    out.update(mean_abs_error=float(np.mean(np.abs(p - m))), mean_predicted=float(np.mean(p)),
               mean_measured=float(np.mean(m)),
               interval_coverage=float(np.mean(covered[has_se])) if has_se.any() else None,
               sign_agreement=float(np.mean(np.sign(p) == np.sign(m))))
    if meas_se is not None:
        e = np.asarray(meas_se, dtype=float)[ok]
        both = has_se & np.isfinite(e)
        out["interval_coverage_with_measurement_error"] = (
            float(np.mean(np.abs(p - m)[both] <= Z95 * np.sqrt(s[both] ** 2 + e[both] ** 2))) if both.any() else None)
    return out


def verdict(uplift: LabelledValue | None) -> str:
    """'better', 'worse' or 'tie' from the measured interval (the baseline itself: 'baseline')."""
    if uplift is None:
        return "not measured"
    if uplift.ci_low is not None and uplift.ci_low > 0:
        return "better"
    if uplift.ci_high is not None and uplift.ci_high < 0:
        return "worse"
    return "tie"


def promotable(uplift: LabelledValue | None, margin: float) -> bool:
    """The promotion rule: a positive measured uplift whose 95% lower bound is >= ``margin``."""
    return (uplift is not None and uplift.kind == "measured" and uplift.value > 0 and uplift.ci_low is not None
            and uplift.ci_low >= margin)


__all__ = ["Z95", "calibration", "labelled", "paired_interval", "promotable", "verdict"]
