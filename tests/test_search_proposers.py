"""Edit operators and proposers: determinism under a seed, dedup, lineage, edit priors, LLM parsing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cpo_engine.edits.prior import EditPrior, default_prior_path
from cpo_engine.exceptions import DataError
from cpo_engine.search import OPERATORS, Candidate, EditProposer, LLMProposer, get_operators
from cpo_engine.search.config import ProposerConfig
from cpo_engine.search.operators import recombine, remove_meta_instruction, sentences, shorten, simplify
from cpo_engine.search.proposers import Feedback, make_proposer, meta_prompt, parse_rewrites
from cpo_engine.taxonomy import EDIT_FAMILIES
from tests.search_helpers import SEEDS


def _parents() -> list[Candidate]:
    return [Candidate.seed(t) for t in SEEDS]


def test_edit_proposer_is_deterministic_under_seed() -> None:
    a = EditProposer(seed=7).propose(_parents(), 10, round=1)
    b = EditProposer(seed=7).propose(_parents(), 10, round=1)
    c = EditProposer(seed=8).propose(_parents(), 10, round=1)
    assert [x.text for x in a] == [x.text for x in b]
    assert [x.text for x in a] != [x.text for x in c]
    # a parent's children do not depend on the order of the parents
    rev = EditProposer(seed=7).propose(_parents()[::-1], 10, round=1)
    by_parent = lambda cs, pid: [x.text for x in cs if x.parent == pid and x.operator != "recombine"]
    for p in _parents():
        assert by_parent(a, p.id) == by_parent(rev, p.id)


def test_children_are_unique_new_and_have_lineage() -> None:
    parents = _parents()
    seen = {Candidate.seed("Let's think step by step. The answer is:").key}
    kids = EditProposer(seed=1).propose(parents, 25, round=2, seen=seen)
    keys = [k.key for k in kids]
    assert len(keys) == len(set(keys)) and not set(keys) & seen
    assert not set(keys) & {p.key for p in parents}
    ids = {p.id for p in parents}
    ops = {op.name: op.family for op in OPERATORS}
    for k in kids:
        assert k.parent in ids and k.round == 2 and ops[k.operator] == k.family
        assert (k.second_parent is not None) == (k.operator == "recombine")
    assert len({k.operator for k in kids}) >= 8  # the operator set is exercised


def test_edit_prior_weights_steer_operators(tmp_path: Path) -> None:
    path = tmp_path / "prior.json"
    zero = {f: 0.0 for f in EDIT_FAMILIES}
    path.write_text(json.dumps({"format": "cpo-edit-prior/1", "default": {},
                                "tasks": {"math": {**zero, "step_by_step": 1.0}}}))
    prior = EditPrior.load(path)
    kids = EditProposer(prior=prior, task="math", seed=0).propose(_parents(), 5, round=1)
    # families weighted 0 are never added; removing one (the inverse weight) is favoured instead
    assert kids and {k.operator for k in kids} <= {"add_step_by_step", "remove_meta_instruction"}
    other = EditProposer(prior=prior, task="other", seed=0).propose(_parents(), 5, round=1)
    assert len({k.family for k in other}) > 1
    _, p = EditProposer(prior=EditPrior(default={"meta_instruction": 0.25})).operator_weights()
    names = [op.name for op in get_operators()]
    assert p[names.index("remove_meta_instruction")] == pytest.approx(16 * p[names.index("add_meta_instruction")])


@pytest.mark.parametrize("raw,match", [
    ({"default": {}}, "format"),
    ({"format": "cpo-edit-prior/1", "default": {"nonsense": 1.0}}, "unknown family 'nonsense'"),
    ({"format": "cpo-edit-prior/1", "default": {}, "tasks": {"t": {"persona": -1}}}, "tasks.t.persona"),
])
def test_bad_edit_prior_names_the_problem(tmp_path: Path, raw: dict, match: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(DataError, match=match) as err:
        EditPrior.load(path)
    assert "bad.json" in str(err.value)


def test_operators_keep_answer_trigger_last() -> None:
    rng = np.random.default_rng(0)
    for op in OPERATORS:
        if op.needs_donor or op.direction < 0 or op.family == "conciseness":
            continue
        out = op.fn("Read the question. The answer is:", rng, None)
        assert out is not None and out.endswith("The answer is:"), (op.name, out)


def test_removal_and_shortening_operators() -> None:
    rng = np.random.default_rng(0)
    text = "Solve it. Follow these instructions exactly. The answer is:"
    assert remove_meta_instruction(text, rng) == "Solve it. The answer is:"
    assert remove_meta_instruction("Solve it.", rng) is None
    assert simplify("Please solve it very carefully.", rng) == "Solve it."
    assert len(sentences(shorten("A b. C d. E f. Answer:", rng))) < 4
    assert recombine("A b. C d.", rng, None) is None
    assert "Q r." in recombine("A b.", np.random.default_rng(1), "Q r.")


class _CannedBackend:
    """Test double for an LLM backend: answers every request with a fixed numbered list.

    The real local LLM (llama.cpp server) is exercised by the generation tests; here only the
    proposer's request building, parsing, dedup and lineage are under test.
    """

    name, model = "canned", "canned"

    def __init__(self, reply: str, *others: str | None) -> None:
        # request i gets replies[i % len(replies)]; a None reply is a failed call
        self.replies, self.requests = [reply, *others], []

    def generate(self, requests):  # noqa: ANN001, ANN201
        from cpo_engine.generation.types import GenerationResponse

        out = []
        for r in requests:
            text = self.replies[len(self.requests) % len(self.replies)]
            self.requests.append(r)
            out.append(GenerationResponse(key=r.key, text=text, error=None if text is not None else "HTTP 503: busy"))
        return out

    def close(self) -> None:
        pass


def test_llm_proposer_parses_dedups_and_keeps_lineage() -> None:
    reply = ('1. "Think step by step and check the result."\n2. Think step by step and check the result.\n'
             "3. The answer is:\n- Solve carefully, then give a single number.\nSure, here you go")
    backend = _CannedBackend(reply)
    parents = _parents()[:2]
    fb = {parents[0].id: Feedback(summary="uplift +0.02", strong=["easy sum"], weak=["long ratio problem"])}
    kids = LLMProposer(backend, per_call=2).propose(parents, 3, round=1, feedback=fb)
    texts = [k.text for k in kids]
    assert texts.count("Think step by step and check the result.") == 1  # dedup across parents too
    assert "The answer is:" not in texts  # identical to a parent
    assert all(k.operator == "llm_rewrite" and k.parent in {p.id for p in parents} for k in kids)
    assert len(backend.requests) == 4  # ceil(3 / 2) calls per parent
    user = backend.requests[0].messages[1]["content"]
    assert "long ratio problem" in user and "uplift +0.02" in user


def test_llm_proposer_counts_failed_and_unusable_calls(caplog):
    answer = "The answer is 42 because 6 times 7 is 42 and that is all there is to say about it."
    backend = _CannedBackend("1. Think step by step, then check.", None, "42", answer)
    proposer = LLMProposer(backend, per_call=1, max_words=12)
    kids = proposer.propose(_parents()[:2], 4, round=1)  # 4 calls per parent
    assert proposer.calls == len(backend.requests) == 8
    assert (proposer.failed_calls, proposer.unusable_calls, proposer.usable_calls) == (2, 4, 2)
    assert proposer.rewrites == 2 and proposer.accepted == len(kids) == 1  # the same rewrite twice: one child
    assert "8 calls, 2 failed (first: HTTP 503: busy), 4 with no usable rewrite; 1 children" in caplog.text
    proposer.propose(_parents()[:1], 1, round=2)
    assert proposer.stats()["calls"] == 9  # counters add up over rounds


def test_make_proposer_from_config(tmp_path: Path) -> None:
    from cpo_engine.generation.backends.openai_http import OpenAIBackend

    assert make_proposer(ProposerConfig(kind="none")) is None
    uniform = make_proposer(ProposerConfig(edit_prior=None), task="math", seed=3)
    assert isinstance(uniform, EditProposer) and uniform.prior is None and (uniform.task, uniform.seed) == ("math", 3)
    auto = make_proposer(ProposerConfig(task="svamp"), task="math")
    assert auto.task == "svamp"  # the configured task wins over the caller's default
    assert (auto.prior is not None) == default_prior_path("math").is_file()
    path = tmp_path / "prior.json"
    path.write_text(json.dumps({"format": "cpo-edit-prior/1", "default": {"persona": 2.0}}))
    assert make_proposer(ProposerConfig(edit_prior=str(path))).prior.weights(None)["persona"] == 2.0
    with pytest.raises(DataError, match="missing.json"):
        make_proposer(ProposerConfig(edit_prior=str(tmp_path / "missing.json")))
    llm = make_proposer(ProposerConfig(kind="llm", llm_base_url="http://127.0.0.1:9/v1/", llm_model="m"), seed=5)
    assert isinstance(llm, LLMProposer) and isinstance(llm.backend, OpenAIBackend) and llm.seed == 5
    assert (llm.backend.base_url, llm.backend.model) == ("http://127.0.0.1:9/v1", "m")


def test_meta_prompt_and_parse_rewrites() -> None:
    msg = meta_prompt(Candidate.seed("Be brief."), 3, None)
    assert "<prompt>Be brief.</prompt>" in msg and "3" in msg
    assert parse_rewrites("1) Do X now.\n2. <prompt>Do Y now.</prompt>\nok", "Be brief.", 50) == ["Do X now.", "Do Y now."]
    reply = "Sure, here are rewrites of your prompt:\n1. 1) Be brief now.\n2. How far is it?\n3. Be brief."
    assert parse_rewrites(reply, "Be brief.", 50, exclude=["How far is it?"]) == ["Be brief now."]
    assert parse_rewrites("Think first. Then answer.", "Be brief.", 50) == ["Think first. Then answer."]
