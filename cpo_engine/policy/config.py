"""Configuration of the learned policy (the ``policy`` section of `cpo run`, `cpo fit` and `cpo assign`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from cpo_engine.exceptions import ConfigError

CANDIDATE_SETS = ("logged", "searched")


@dataclass
class PolicyConfig:
    """How the learned policy recommends a prompt per query (`cpo run`'s assignment, `cpo assign`,
    :class:`~cpo_engine.policy.Policy`), and when it is not trusted."""

    candidates: str = field(default="logged", metadata={"choices": CANDIDATE_SETS})
    """'logged': choose among the logged prompts (an LLM ran them: verified); 'searched': also among the
    run's best searched candidates (predicted by the model only: unverified until an LLM runs them)."""
    max_searched: int = 50
    """With candidates='searched': how many of the run's searched candidates (best static objective
    first, inside the trust region) compete."""
    fallback: bool = True
    """When the data are too small or too noisy to learn a per-query policy (see the three checks
    below), recommend the best static prompt for every query instead, with an
    UnreliablePolicyWarning. False: warn, but keep the per-query choice."""
    min_queries: int = 100
    """Check 1: fewer training queries than this, or than the model's heterogeneity coefficients
    ((d_phi - 1) x d_T), is too few."""
    heterogeneity_level: float = 0.05
    """Check 4: keep the per-query choice only when the honest heterogeneity test (half-sample predictions
    of per-query uplift against the other half's measured or doubly robust uplifts) rejects at this level;
    1.0 turns the check off."""
    min_outcome_r2: float = 0.005
    """Check 2: an out-of-fold R^2 of E[Y|X] below this means the query features say next to nothing
    about the score; with no detectable variation of the effects with the query either (joint Wald test
    p >= 0.05), they cannot say which prompt suits which query."""

    def __post_init__(self) -> None:
        if self.candidates not in CANDIDATE_SETS:
            raise ConfigError(f"policy.candidates must be one of {CANDIDATE_SETS}, got '{self.candidates}'")
        if self.max_searched < 1 or self.min_queries < 1:
            raise ConfigError("policy.max_searched and policy.min_queries must be >= 1")
        if not 0 < self.heterogeneity_level <= 1:
            raise ConfigError(f"policy.heterogeneity_level must be in (0, 1], got {self.heterogeneity_level}")


__all__ = ["CANDIDATE_SETS", "PolicyConfig"]
