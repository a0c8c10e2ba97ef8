"""The settings of the edit analysis (:class:`PairConfig`, :class:`EffectConfig`, :class:`PriorConfig`), in a
module that imports neither pandas nor numpy, so the CLI builds `cpo edits`' flags (and their help) from these
fields without loading the analysis. They are re-exported by the modules that use them
(:mod:`~cpo_engine.edits.pairs`, :mod:`~cpo_engine.edits.analysis`, :mod:`~cpo_engine.edits.prior`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cpo_engine.edits.families import DetectorConfig
from cpo_engine.exceptions import ConfigError

PAIRS = ("auto", "all", "lineage")
FAMILIES_FROM = ("both", "detect", "declared")
INFERENCE = ("prompt_jackknife", "query")


@dataclass(frozen=True)
class PairConfig:
    """How edits and their paired units are formed.

    Attributes
    ----------
    pairs : {"auto", "all", "lineage"}
        ``all``: every ordered pair of prompts in a cell; ``lineage``: only parent -> child links
        (needs ``parent_id``); ``auto``: lineage when the input has links, else all.
    max_edits_per_cell : int or None
        Keep at most this many edits per ``(task, model)`` (a seeded random subset); None (or 0) keeps all.
        Every ordered pair of P prompts is P*(P-1) edits, so large grids need a cap.
    families_from : {"both", "detect", "declared"}
        Family vector from the text detectors, from the trace's ``family``/``operator`` label, or
        both (a declared family is set when the detectors did not see it).
    detector : DetectorConfig
        Lexicons and size rules of the family detectors.
    motif_max_n : int
        Longest word n-gram kept as a text-diff motif.
    seed : int
        Seed of the edit subsampling.
    """

    pairs: str = field(default="auto", metadata={"choices": PAIRS})
    max_edits_per_cell: int | None = 5000
    families_from: str = field(default="both", metadata={"choices": FAMILIES_FROM})
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    motif_max_n: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pairs not in PAIRS:
            raise ConfigError(f"The 'pairs' parameter of PairConfig must be 'auto', 'all' or 'lineage', "
                              f"got {self.pairs!r}")
        if self.families_from not in FAMILIES_FROM:
            raise ConfigError("The 'families_from' parameter of PairConfig must be 'both', 'detect' or 'declared', "
                              f"got {self.families_from!r}")
        if self.max_edits_per_cell == 0:  # 0 = no cap (what `cpo edits --max-edits-per-cell 0` has always meant)
            object.__setattr__(self, "max_edits_per_cell", None)
        if self.max_edits_per_cell is not None and self.max_edits_per_cell < 1:
            raise ConfigError("The 'max_edits_per_cell' parameter of PairConfig must be an int >= 1, or None or 0 "
                              f"(no cap), got {self.max_edits_per_cell!r}")


@dataclass(frozen=True)
class EffectConfig:
    """How edit effects are estimated and tested.

    Attributes
    ----------
    learner : str or estimator
        Nuisance learner for the outcome and propensity models (``"linear"``, ``"hgb"``, ...).
    cv : int
        Cross-fitting folds, grouped by query.
    inference : {"prompt_jackknife", "query"}
        ``query``: standard errors clustered by query, conditional on the prompts that were edited
        (right when those edits are the object of interest). ``prompt_jackknife`` (default): the
        larger of that and a delete-one-prompt jackknife, which also counts the luck of which
        prompts carry a family: the question "does adding this family help" generalizes over edits,
        and with few prompts the query-clustered interval alone is far too narrow. Its p-values and
        intervals use t quantiles with (prompts in the jackknife - 1) degrees of freedom (column
        ``df``). Both standard errors are always reported (``se_query``, ``se_jackknife``,
        ``q_value_query``).
    fdr : float
        Benjamini-Hochberg level; ``significant`` is ``q <= fdr``. Each table is its own BH family: all
        family x task x model cells together; the surface table apart; the motif table apart; the
        heterogeneity tests apart (so ``fdr`` holds within each table, not across them).
    min_edits : int
        A family is estimated in a cell only if at least this many distinct edits change it ...
    min_prompts : int
        ... and at least this many distinct prompts carry it (with one, its "effect" is that one
        prompt's effect).
    by_model : bool
        Separate cells per model when the data has several; False pools models within a task.
    motif_top_k : int
        Motifs (signed n-grams) analysed per cell, the most frequent first; 0 skips motifs.
    motif_min_edits : int
        A motif needs at least this many distinct edits in the cell.
    random_state : int
        Seed of the fold assignment.
    """

    learner: Any = "linear"
    cv: int = 5
    inference: str = field(default="prompt_jackknife", metadata={"choices": INFERENCE})
    fdr: float = 0.05
    min_edits: int = 2
    min_prompts: int = 2
    by_model: bool = True
    motif_top_k: int = 30
    motif_min_edits: int = 3
    random_state: int = 0

    def __post_init__(self) -> None:
        checks = [("cv", self.cv >= 2, "an int >= 2"), ("fdr", 0 < self.fdr < 1, "in (0, 1)"),
                  ("min_edits", self.min_edits >= 1, "an int >= 1"),
                  ("min_prompts", self.min_prompts >= 1, "an int >= 1"),
                  ("inference", self.inference in INFERENCE, "'prompt_jackknife' or 'query'"),
                  ("motif_top_k", self.motif_top_k >= 0, "an int >= 0")]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"The '{name}' parameter of EffectConfig must be {rule}, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class PriorConfig:
    """How effects become proposer weights.

    Attributes
    ----------
    temperature : float
        Effect (in score units) that multiplies a weight by e; 0.05 means +5 points -> 2.7x.
        `cpo edits` (:func:`~cpo_engine.edits.run.analyze`) reads it as a fraction of the score range when
        the scores leave [0, 1] (a rubric 1-5: 0.05 is 0.2 points).
    max_ratio : float
        Weights are clipped to ``[1/max_ratio, max_ratio]`` so no operator is switched off.
    """

    temperature: float = 0.05
    max_ratio: float = 5.0

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ConfigError(f"The 'temperature' parameter of PriorConfig must be > 0, got {self.temperature!r}")
        if not self.max_ratio >= 1:
            raise ConfigError(f"The 'max_ratio' parameter of PriorConfig must be >= 1, got {self.max_ratio!r}")


__all__ = ["DetectorConfig", "EffectConfig", "FAMILIES_FROM", "INFERENCE", "PAIRS", "PairConfig", "PriorConfig"]
