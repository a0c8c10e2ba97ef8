"""Configuration of the search library: selection rule, beam sizes, proposer.

Kept free of heavy imports so the CLI and config loader can build it without importing torch.
Each knob has one default, documented here once; every workflow (`cpo run`, `cpo optimize`,
`cpo nightly`) composes these same dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cpo_engine.exceptions import ConfigError
from cpo_engine.search.proposers import check_proposer, proposer_help, proposer_names

REFERENCES = ("incumbent", "mean")
TRUST_MODES = ("exclude", "penalize", "off")


@dataclass
class SelectionConfig:
    """How a prompt is chosen per query from scored candidates (pool or searched)."""

    z: float = 1.645
    """Selection by lower confidence bound effect - z * se (1.645: one-sided 95%); 0 uses the point
    estimate. With reference='incumbent', a query leaves the incumbent only when the bound of its gain
    is positive. With simultaneous=True, z sets the level (Phi(z), 95% here) of a bound that holds for
    every prompt at once, whose multiplier is larger."""
    simultaneous: bool = True
    """Lower bounds that hold for all candidate prompts at once (Scheffe over the d_T prompt
    directions: multiplier sqrt of the chi-square quantile with d_T degrees of freedom at level Phi(z),
    3.08 for d_T = 4), valid however many candidates the search scores or how it generated them.
    False: z itself, one prompt at a time; choosing the best of thousands then leaves the incumbent by
    chance (measured: on 84% of queries under a global null with 5,016 candidates at d_T = 15;
    docs/causal.md)."""
    split: bool = True
    """Honest selection: choose (and decide to leave the incumbent) with the final stage fitted on one
    half of the training queries; report the chosen prompt's uplift and interval from the other half,
    which the choice never saw. False: one fit for both, and a chosen prompt's reported uplift is
    selection-biased (reports say so)."""
    reference: str = field(default="incumbent", metadata={"choices": REFERENCES})
    """What effects and their intervals are measured from: 'incumbent' (the logged prompt the model
    ranks best on average, so a query leaves it only when the lower bound of the gain is positive) or
    'mean' (the mean logged prompt representation, the model's own t_ref)."""
    trust_region: str = field(default="exclude", metadata={"choices": TRUST_MODES})
    """'exclude', 'penalize' or 'off': what happens to candidates beyond the logged prompts' support."""
    trust_slack: float = 1.25
    """Trust radius as a multiple of the largest Mahalanobis distance of a logged prompt."""
    length_penalty: float = 0.0
    """Objective lost per 100 words of prompt (cost proxy); 0 disables it."""

    def __post_init__(self) -> None:
        if self.z < 0:
            raise ConfigError(f"selection.z must be >= 0, got {self.z}")
        if self.reference not in REFERENCES:
            raise ConfigError(f"selection.reference must be one of {REFERENCES}, got '{self.reference}'")
        if self.trust_region not in TRUST_MODES:
            raise ConfigError(f"selection.trust_region must be one of {TRUST_MODES}, got '{self.trust_region}'")
        if self.trust_slack <= 0:
            raise ConfigError(f"selection.trust_slack must be > 0, got {self.trust_slack}")


@dataclass
class BeamConfig:
    """Sizes of the batched beam search.

    A round aims for ``beam_width * children_per_beam`` new candidates (2,048 by default), all
    embedded through the cache and scored for every query in one pass: thousands of candidates per
    round cost seconds, since scoring needs no LLM call. With an LLM proposer every child is a
    rewrite request: lower ``children_per_beam`` (or ``--children``) to bound the calls.
    """

    rounds: int = 3
    """Proposal rounds after scoring the seeds."""
    beam_width: int = 32
    """Beams kept by static objective each round."""
    query_beams: int = 4
    """Extra beams: the candidates that are top-1 for the most queries (0 disables)."""
    children_per_beam: int = 64
    """Children each beam asks its proposer for per round."""
    refills: int = 2
    """Extra proposal steps a round may take to reach ``beam_width * children_per_beam`` new candidates
    when its beams run out of distinct children first (few or short parents, as in round 1 from a
    small logged prompt set): the round scores what it has, re-selects beams from everything scored
    so far (its own new children included) and asks them for the rest. 0: one step per round."""
    top_k: int = 5
    """Candidates kept per query."""
    feedback_examples: int = 2
    """Strong/weak example queries shown to an LLM proposer per parent (0: no feedback)."""

    def __post_init__(self) -> None:
        for name in ("beam_width", "children_per_beam", "top_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"beam.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("rounds", "query_beams", "feedback_examples", "refills"):
            if getattr(self, name) < 0:
                raise ConfigError(f"beam.{name} must be >= 0, got {getattr(self, name)}")

    @property
    def round_budget(self) -> int:
        """New candidates a round aims for."""
        return self.beam_width * self.children_per_beam


#: `cpo run`'s default proposer.kind: search ('edit') only when an LLM can verify what the search finds.
AUTO_PROPOSER = "auto"


@dataclass
class ProposerConfig:
    """Where new candidate prompts come from."""

    kind: str = field(default="edit", metadata={"choices": proposer_names, "describe": proposer_help})
    """A registered proposer (:func:`cpo_engine.search.proposers.proposer_names`; `cpo optimize --help` lists
    them with one line each): 'edit' (edit operators, no LLM) by default; 'none': no generative search
    (choose among the logged prompts only). `cpo run` starts from 'auto': 'edit' when an LLM is configured to
    verify searched prompts, else 'none' (said in one line; --proposer edit searches anyway)."""
    options: dict = field(default_factory=dict)  # bare dict: the config loader reads dict[K, V] as a union
    """Options of the chosen proposer: the keys it registered with their defaults
    (:attr:`cpo_engine.search.proposers.ProposerSpec.options`); any other key is an error."""
    edit_prior: str | None = "auto"
    """Edit-prior JSON steering the edit operators; 'auto' uses the packaged one; None: uniform."""
    task: str | None = None
    """Task whose edit-prior weights apply; None: the most common value of the table's task column."""
    llm_base_url: str = "http://127.0.0.1:8080/v1"
    """OpenAI-compatible server of the LLM proposer."""
    llm_model: str = "default"
    """Model name sent to that server."""

    def __post_init__(self) -> None:
        if self.kind != AUTO_PROPOSER:  # 'auto' (`cpo run`'s default) is resolved by the workflow
            check_proposer(self)  # a registered kind, and only options it takes


def __getattr__(name: str) -> Any:
    if name == "PROPOSERS":  # the registered names (formerly a hand-written tuple)
        return proposer_names()
    raise AttributeError(f"module '{__name__}' has no attribute '{name}'")


__all__ = ["SelectionConfig", "BeamConfig", "ProposerConfig", "AUTO_PROPOSER", "REFERENCES", "TRUST_MODES"]
