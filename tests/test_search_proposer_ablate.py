"""The ``ablate`` proposer, a plugin of one file (cpo_engine/search/proposers/ablate.py), and the proposer
registry that makes it so: the CLI's choices and help, the config validation and the workflows' checks
all come from the registry, and no other file of the package names the plugin."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from cpo_engine.cli import build_parser
from cpo_engine.exceptions import ConfigError
from cpo_engine.search import BeamConfig, BeamSearch, Candidate, CandidateScorer, ProposerConfig
from cpo_engine.search.proposers import (make_proposer, proposer_names, proposer_spec, register_proposer,
                                         unregister_proposer)
from cpo_engine.search.proposers.ablate import AblationProposer
from tests.search_helpers import SEEDS, hash_embed, make_head

PACKAGE = Path(__file__).resolve().parents[1] / "cpo_engine"


def _command(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _choices(command: str, dest: str = "proposer") -> list[str]:
    return list(next(a for a in _command(command)._actions if a.dest == dest).choices)


def test_ablations_drop_each_body_sentence_once_and_keep_the_trigger() -> None:
    p = AblationProposer()
    parent = Candidate.seed("Be brief. Think step by step. Check your work. The answer is:")
    kids = p.propose([parent], 10, round=2)
    assert [k.text for k in kids] == ["Think step by step. Check your work. The answer is:",
                                      "Be brief. Check your work. The answer is:",
                                      "Be brief. Think step by step. The answer is:"]
    assert all(k.parent == parent.id and k.operator == "drop_sentence" and k.family == "conciseness"
               and k.round == 2 for k in kids)
    assert [k.text for k in p.propose([parent], 2, round=1)] == [k.text for k in kids[:2]]  # at most n per parent
    # never a child already seen, nor a parent; deterministic
    seen = {kids[0].key}
    assert [k.text for k in p.propose([parent], 10, round=1, seen=seen)] == [k.text for k in kids[1:]]
    assert p.propose([parent], 10, round=1) == p.propose([parent], 10, round=1)
    assert p.propose([Candidate.seed("Solve it.")], 5, round=1) == []  # one sentence: nothing to drop
    assert AblationProposer(min_sentences=3).propose([parent], 10, round=1) == []
    with pytest.raises(ConfigError, match="min_sentences"):
        AblationProposer(min_sentences=0)


def test_registered_in_config_validation_and_make_proposer() -> None:
    spec = proposer_spec("ablate")
    assert spec.generative and not spec.needs_server and spec.options == {"min_sentences": 1}
    made = make_proposer(ProposerConfig(kind="ablate", options={"min_sentences": 2}))
    assert isinstance(made, AblationProposer) and made.min_sentences == 2
    with pytest.raises(ConfigError, match="does not take seed_words .*min_sentences"):
        ProposerConfig(kind="ablate", options={"seed_words": 3})
    with pytest.raises(ConfigError, match="min_sentences .* must be of type int"):
        ProposerConfig(kind="ablate", options={"min_sentences": "2"})
    with pytest.raises(ConfigError, match="did you mean 'ablate'"):
        ProposerConfig(kind="ablat")
    from cpo_engine.commands import config_from_args
    from cpo_engine.workflows.config import OptimizeConfig

    args = build_parser().parse_args(["optimize", "--proposer", "ablate", "--set", "proposer.options.min_sentences=2"])
    assert config_from_args(args, OptimizeConfig).proposer == ProposerConfig(kind="ablate", options={"min_sentences": 2})


def test_in_every_cli_choice_list_and_help() -> None:
    for command in ("run", "optimize", "nightly"):
        assert "ablate" in _choices(command), command
    assert "llm" not in _choices("run") and "llm" in _choices("optimize")  # `cpo run` starts no LLM server
    assert build_parser().parse_args(["run", "--proposer", "ablate"]).proposer == "ablate"
    help_ = next(a for a in _command("optimize")._actions if a.dest == "proposer").help
    assert "ablate: each leave-one-sentence-out variant" in help_ and "edit: edit operators" in help_
    from cpo_engine.workflows.config import LoopConfig, RunConfig

    assert RunConfig(proposer=ProposerConfig(kind="ablate")).proposer.kind == "ablate"
    assert LoopConfig(proposer=ProposerConfig(kind="ablate")).proposer.kind == "ablate"


def test_beam_search_with_it() -> None:
    head = make_head(seed=0)
    X = np.random.default_rng(0).normal(size=(30, 2))
    scorer = CandidateScorer(head, X, hash_embed, device="cpu")
    cfg = BeamConfig(rounds=2, beam_width=3, query_beams=1, children_per_beam=8, top_k=2)
    res = BeamSearch(make_proposer(ProposerConfig(kind="ablate")), scorer, cfg).run([Candidate.seed(t) for t in SEEDS])
    kids = [c for c in res.candidates if c.parent is not None]
    assert kids and all(c.operator == "drop_sentence" for c in kids)
    by_id = {c.id: c for c in res.candidates}
    assert all(len(c.text) < len(by_id[c.parent].text) for c in kids)


def test_the_plugin_is_one_file() -> None:
    """No other module of the package names it: the registry found it by importing its package's modules."""
    named = sorted(str(f.relative_to(PACKAGE)) for f in PACKAGE.rglob("*.py")
                   if "ablate" in f.read_text(encoding="utf-8") or "AblationProposer" in f.read_text(encoding="utf-8"))
    assert named == ["search/proposers/ablate.py"]


def test_a_proposer_registered_from_outside_shows_up_everywhere() -> None:
    @register_proposer("echo_test", help="children equal to their parents", options={"k": 2})
    def make_echo(cfg, *, task=None, seed=0, k=2):  # noqa: ANN001, ANN202
        return ("echo", k)

    try:
        assert "echo_test" in proposer_names() and "echo_test" in _choices("optimize")
        assert make_proposer(ProposerConfig(kind="echo_test", options={"k": 5})) == ("echo", 5)
        with pytest.raises(ValueError, match="already registered"):
            register_proposer("echo_test", help="another")(lambda cfg, **kw: None)
    finally:
        unregister_proposer("echo_test")
    with pytest.raises(ConfigError, match="unknown proposer 'echo_test'"):
        ProposerConfig(kind="echo_test")
