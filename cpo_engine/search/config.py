"""Configuration of the search stage of `cpo run` (the `search` section of a run config).

Kept free of heavy imports so the CLI and config loader can build it without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from cpo_engine.exceptions import ConfigError


def check_beam_sizes(*, rounds: int, beam_width: int, query_beams: int, children_per_beam: int, top_k: int,
                     feedback_examples: int = 0) -> None:
    """Bounds of the beam-search sizes, shared by the `search` run section and `SearchConfig`, so a bad
    value fails when the config is read, not after the model is fitted."""
    for name, value in (("beam_width", beam_width), ("children_per_beam", children_per_beam), ("top_k", top_k)):
        if value < 1:
            raise ConfigError(f"search.{name} must be >= 1, got {value}")
    if rounds < 0 or query_beams < 0 or feedback_examples < 0:
        raise ConfigError("search.rounds, search.query_beams and search.feedback_examples must be >= 0")


@dataclass
class SearchStageConfig:
    """The `search` section of a run: split, models, selection rule, trust region, beam search."""

    test_fraction: float = 0.3
    """Share of query texts held out (never fitted on) to evaluate pool mode against outcomes."""
    featurizer: str = "linear"
    """phi(X) of the causal model's final stage: 'constant', 'linear' or 'poly2'."""
    model_y: str = "ridge"
    """Nuisance E[Y|X]: 'ridge', 'mlp', 'hgb', 'lgbm'."""
    model_t: str = "ridge"
    """Nuisance E[T|X]."""
    cv: int = 5
    """Cross-fitting folds (grouped by query)."""
    final_alpha: float | str = "cv"
    """Ridge penalty on the heterogeneous part of theta(X) in the final stage; 'cv' picks it by
    query-grouped cross-validation (see docs/causal.md); 0 is plain OLS."""
    z: float = 1.645
    """Selection by lower confidence bound effect - z * se (1.645: one-sided 95%); 0 uses the point
    estimate. With reference='incumbent', a query leaves the incumbent only when the bound of its gain
    is positive."""
    trust_region: str = "exclude"
    """'exclude', 'penalize' or 'off': what happens to candidates beyond the logged prompts' support."""
    trust_slack: float = 1.25
    """Trust radius as a multiple of the largest Mahalanobis distance of a logged prompt."""
    length_penalty: float = 0.0
    """Objective lost per 100 words of prompt (cost proxy); 0 disables it."""
    reference: str = "incumbent"
    """What effects and their intervals are measured from: 'incumbent' (the logged prompt the model
    ranks best on average, so a query leaves it only when the lower bound of the gain is positive) or
    'mean' (the mean logged prompt representation, the model's own t_ref)."""
    simulate_confounding: str | None = None
    """None: fit on the training queries' rows as logged. 'observable' or 'latent' (full-grid data
    only): fit on logs drawn from them with a known query-dependent logging policy (elaborate prompts
    for long or hard queries), to see the causal and non-causal models differ under confounding."""
    confounding_strength: float = 2.0
    """Logit scale of the simulated logging policy."""
    logged_per_query: int = 4
    """Simulated logged rows per training query."""
    proposer: str = "edit"
    """Generative mode: 'edit' (edit operators, no LLM) or 'none' (pool mode only)."""
    edit_prior: str | None = "auto"
    """Edit-prior JSON steering the operators; 'auto' uses the packaged one when present; None: uniform."""
    task: str | None = None
    """Task whose edit-prior weights apply; None: the most common value of the table's task column."""
    rounds: int = 3
    """Beam-search rounds."""
    beam_width: int = 8
    """Beams kept by static objective each round."""
    query_beams: int = 4
    """Extra beams: candidates that win the most queries."""
    children_per_beam: int = 24
    """Children per beam per round."""
    top_k: int = 5
    """Candidates kept per query."""
    n_tiers: int = 3
    """Query-difficulty tiers in the report."""
    device: str = "auto"
    """Where scoring and the causal model run."""

    def __post_init__(self) -> None:
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"search.test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.reference not in ("incumbent", "mean"):
            raise ConfigError(f"search.reference must be 'incumbent' or 'mean', got '{self.reference}'")
        if self.simulate_confounding not in (None, "observable", "latent"):
            raise ConfigError("search.simulate_confounding must be null, 'observable' or 'latent', got "
                              f"'{self.simulate_confounding}'")
        check_beam_sizes(rounds=self.rounds, beam_width=self.beam_width, query_beams=self.query_beams,
                         children_per_beam=self.children_per_beam, top_k=self.top_k)
        if self.proposer not in ("edit", "none"):
            raise ConfigError(f"search.proposer must be 'edit' or 'none' for `cpo run`, got '{self.proposer}' "
                              "(the LLM proposer is available from the Python API and `cpo optimize`)")


__all__ = ["SearchStageConfig", "check_beam_sizes"]
