"""Proposers: make child prompts from parent prompts, deduplicated, with lineage.

One file per proposer, all built by :func:`make_proposer` from a
:class:`~cpo_engine.search.config.ProposerConfig`:

- ``edit`` (:mod:`.edit`): :class:`EditProposer` applies edit operators sampled with the weights of
  an edit prior (:class:`cpo_engine.edits.prior.EditPrior`); no LLM, deterministic under a seed.
- ``llm`` (:mod:`.llm`): :class:`LLMProposer` asks an LLM on an OpenAI-compatible server to rewrite
  a parent, telling it what the causal model found strong and weak about it.
- ``none``: no generative search (choose among the logged prompts only).
"""

from __future__ import annotations

from pathlib import Path

from cpo_engine.edits.prior import EditPrior, default_prior_path
from cpo_engine.exceptions import ConfigError
from cpo_engine.search.config import PROPOSERS, ProposerConfig
from cpo_engine.search.proposers.base import Feedback, Proposer
from cpo_engine.search.proposers.edit import EditProposer
from cpo_engine.search.proposers.llm import LLMProposer, meta_prompt, parse_rewrites


def load_prior(edit_prior: str | None) -> EditPrior | None:
    """The edit prior a :class:`ProposerConfig` names.

    ``"auto"``: the packaged prior (:func:`cpo_engine.edits.prior.default_prior_path`) when it is
    installed, else uniform weights; None: uniform weights; anything else: a path, read and
    validated (a missing or bad file is a :class:`~cpo_engine.exceptions.DataError` naming it).
    """
    if edit_prior is None:
        return None
    if edit_prior == "auto":
        path = default_prior_path("math")
        return EditPrior.load(path) if path.is_file() else None
    return EditPrior.load(Path(edit_prior))


def make_proposer(cfg: ProposerConfig, *, task: str | None = None, seed: int = 0) -> Proposer | None:
    """The proposer ``cfg.kind`` names, or None for ``"none"``.

    Parameters
    ----------
    cfg : ProposerConfig
        Kind, edit prior, task and the LLM server.
    task : str, optional
        Task whose edit-prior weights apply when ``cfg.task`` is unset (callers pass the most common
        task of their table); ``cfg.task`` wins when set.
    seed : int
        Base seed of the proposer.
    """
    if cfg.kind == "none":
        return None
    if cfg.kind == "llm":
        # The LLM backend (HTTP client) is imported only when an LLM proposer is asked for.
        from cpo_engine.generation.backends import BackendConfig, OpenAIConfig, make_backend

        backend = make_backend(BackendConfig(kind="openai", model=cfg.llm_model,
                                             openai=OpenAIConfig(base_url=cfg.llm_base_url)))
        return LLMProposer(backend, seed=seed)
    if cfg.kind == "edit":
        return EditProposer(prior=load_prior(cfg.edit_prior), task=cfg.task if cfg.task is not None else task,
                            seed=seed)
    raise ConfigError(f"proposer.kind must be one of {PROPOSERS}, got '{cfg.kind}'")


__all__ = ["EditProposer", "Feedback", "LLMProposer", "Proposer", "load_prior", "make_proposer", "meta_prompt",
           "parse_rewrites"]
