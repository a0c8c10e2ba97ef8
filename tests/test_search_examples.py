"""The worked-examples proposers (``examples``, ``edit_examples``; cpo_engine/search/proposers/examples.py), the
``worked_examples`` edit family, and the edit prior in the LLM proposer's meta-prompt."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpo_engine.edits.extract import diff_spans
from cpo_engine.edits.families import edit_families, family_presence
from cpo_engine.edits.prior import EditPrior
from cpo_engine.exceptions import ConfigError, DataError
from cpo_engine.search import BeamConfig, Candidate, ProposerConfig
from cpo_engine.search.proposers import make_proposer, proposer_spec
from cpo_engine.search.proposers.examples import EditExamplesProposer, ExamplesProposer, success_demos
from tests.http_helpers import reply
from tests.search_helpers import SEEDS, hash_embed, make_head

_DEMO = re.compile(r"^Q: (.*)\nA: (.*)$", re.M)  # (question, answer) of each demonstration
PARENT = Candidate.seed("Let's think step by step. The answer is:", id="cot")


def _table(n_q: int = 12) -> pa.Table:
    """Query i has 3 rows scored 1, 0.5 and 0 when i is even, 0.5, 0, 0 when odd; the gold answer is i + 100."""
    rows = []
    for i in range(n_q):
        scores = (1.0, 0.5, 0.0) if i % 2 == 0 else (0.5, 0.0, 0.0)
        for j, s in enumerate(scores):
            rows.append({"query_id": f"q{i:02d}", "query_text": f"What is {i} plus 100 for item {i}?",
                         "prompt_id": f"p{j}", "prompt_text": SEEDS[j], "score": s, "gold_answer": float(i + 100)})
    return pa.Table.from_pylist(rows)


def _demo_queries(texts: list[str]) -> set[str]:
    return {q for t in texts for q, _ in _DEMO.findall(t)}


def _examples(data: pa.Table, **options) -> ExamplesProposer:  # noqa: ANN003
    return make_proposer(ProposerConfig(kind="examples", options=options), seed=3, data=data)


def test_demos_come_only_from_the_top_scoring_training_rows() -> None:
    demos = success_demos(_table())
    assert [d.query_id for d in demos] == [f"q{i:02d}" for i in range(0, 12, 2)]  # score 1 = the top of the range
    assert demos[0].text == "Q: What is 0 plus 100 for item 0?\nA: 100"  # a float gold that is an integer: "100"
    assert len(success_demos(_table(), min_score=0.5)) == 12  # a lower bar lets the odd queries in
    kids = _examples(_table(), k=2).propose([PARENT], 10, round=1)
    assert len(kids) == 10 and all(k.family == "worked_examples" and k.operator == "add_examples" for k in kids)
    shown = _demo_queries([k.text for k in kids])
    assert shown and shown <= {f"What is {i} plus 100 for item {i}?" for i in range(0, 12, 2)}
    assert all(k.text.startswith("Let's think step by step.\nQ: ") and k.text.endswith("\nThe answer is:")
               for k in kids)  # the demonstrations go before the answer trigger, on lines of their own
    assert all(len(_DEMO.findall(k.text)) == 2 for k in kids)


def test_a_response_column_gives_the_shortest_successful_answer() -> None:
    t = _table(4).append_column("response_text", pa.array(  # per query: 2, 1, 0 times "Long work."
        [f"{'Long work. ' * (2 - r % 3)}So {100 + r // 3}." for r in range(12)]))
    # q00: row 0 (score 1) and row 1 (0.5) qualify at 0.5, row 1's answer is the shorter; row 2 (score 0) never
    assert success_demos(t, min_score=0.5)[0].answer == "Long work. So 100."
    assert success_demos(t)[0].answer == "Long work. Long work. So 100."  # at the top score only row 0
    assert success_demos(t, answer_column="gold_answer")[0].answer == "100"


def test_children_of_children_swap_their_demonstrations_and_the_seed_decides() -> None:
    a, b = _examples(_table(), k=2), _examples(_table(), k=2)
    kids = a.propose([PARENT], 4, round=1)
    assert [k.text for k in kids] == [k.text for k in b.propose([PARENT], 4, round=1)]
    other = make_proposer(ProposerConfig(kind="examples", options={"k": 2}), seed=4, data=_table())
    assert [k.text for k in kids] != [k.text for k in other.propose([PARENT], 4, round=1)]
    grand = a.propose(kids[:1], 3, round=2)
    assert grand and all(len(_DEMO.findall(g.text)) == 2 for g in grand)  # swapped, not piled up
    assert all(g.text.startswith("Let's think step by step.\nQ: ") for g in grand)
    # the parents' order does not change a parent's children
    p2 = Candidate.seed("Answer:", id="plain")
    x = {k.text for k in _examples(_table()).propose([PARENT, p2], 2, round=1)}
    assert x == {k.text for k in _examples(_table()).propose([p2, PARENT], 2, round=1)}


def test_diverse_choice_spreads_over_the_questions() -> None:
    t = pa.Table.from_pylist([{"query_id": f"q{i}", "query_text": text, "prompt_id": "p", "prompt_text": "",
                               "score": 1.0, "gold_answer": "1"} for i, text in enumerate(
        ["apples and pears in a box", "apples and pears in a bag", "apples and pears in a cart",
         "trains leave the station at noon"])])
    p = _examples(t, k=2, choose="diverse")
    for kid in p.propose([PARENT], 3, round=1):
        assert "trains leave the station at noon" in _demo_queries([kid.text])


@pytest.mark.parametrize("options, match", [
    ({"k": 0}, "k must be >= 1"),
    ({"choose": "best"}, "choose must be one of random, diverse"),
    ({"min_score": "high"}, "min_score must be a finite number"),
    ({"max_demo_words": 1}, "max_demo_words and max_words must be >= 2"),
    ({"shots": 2}, "does not take shots"),
    ({"k": 2.5}, "k of proposer 'examples' must be of type int"),
])
def test_bad_options_are_config_errors_before_any_data(options: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        cfg = ProposerConfig(kind="examples", options=options)
        proposer_spec("examples").preflight(cfg)


def test_bad_data_says_what_is_missing() -> None:
    with pytest.raises(ConfigError, match="needs the training rows"):
        make_proposer(ProposerConfig(kind="examples"))
    with pytest.raises(DataError, match="no response_text or gold_answer"):
        _examples(_table().drop_columns(["gold_answer"]))
    with pytest.raises(DataError, match="6 successful training queries .* fewer than the 7"):
        _examples(_table(), k=7)
    with pytest.raises(DataError, match="no column 'answer'"):
        _examples(_table(), answer_column="answer")


def test_the_edit_analysis_sees_the_family() -> None:
    kid = _examples(_table(), k=3).propose([PARENT], 1, round=1)[0]
    assert len(kid.text.split()) - len(PARENT.text.split()) >= 25  # large enough for the size rule of complexity
    ins, dele = diff_spans(PARENT.text, kid.text)
    fams = edit_families(ins, dele, len(PARENT.text.split()), len(kid.text.split()))
    assert fams["worked_examples"] == 1 and fams["complexity"] == 0  # not "elaborate detail" by its size
    assert edit_families(dele, ins, len(kid.text.split()), len(PARENT.text.split()))["worked_examples"] == -1
    assert family_presence(kid.text)["worked_examples"] == 1 and family_presence(PARENT.text)["worked_examples"] == 0
    assert family_presence("Here are some worked examples.")["worked_examples"] == 1
    assert EditPrior().weights(None)["worked_examples"] == 1.0  # a prior without the family: neutral


def test_edit_examples_follows_the_prior_weight_of_the_family() -> None:
    def mixed(weight: float) -> EditExamplesProposer:
        prior = EditPrior(default={"worked_examples": weight})
        p = make_proposer(ProposerConfig(kind="edit_examples", edit_prior=None), seed=0, data=_table())
        p.edit.prior = prior
        return p

    parents = [Candidate.seed(t, id=f"s{i}") for i, t in enumerate(SEEDS)]
    share = {w: sum(k.family == "worked_examples" for k in mixed(w).propose(parents, 6, round=1)) for w in
             (0.0, 1.0, 20.0)}
    assert mixed(1.0).examples_share() == pytest.approx(1 / 14)  # one more operator among the 13 edits
    assert share[0.0] == 0 < share[20.0] and share[1.0] < share[20.0], share
    kids = mixed(20.0).propose(parents, 6, round=1)
    assert all(sum(k.parent == p.id for k in kids) <= 6 for p in parents)
    assert {k.family for k in kids} - {"worked_examples"}  # the edits still propose


def _reps(table: pa.Table) -> SimpleNamespace:
    qids = sorted(set(table.column("query_id").to_pylist()))
    texts = {q: t for q, t in zip(table.column("query_id").to_pylist(), table.column("query_text").to_pylist())}
    pids = sorted(set(table.column("prompt_id").to_pylist()))
    ptexts = {p: t for p, t in zip(table.column("prompt_id").to_pylist(), table.column("prompt_text").to_pylist())}
    return SimpleNamespace(query_ids=np.array(qids, dtype=object), query_texts=[texts[q] for q in qids],
                           prompt_ids=np.array(pids, dtype=object), prompt_texts=[ptexts[p] for p in pids],
                           X=np.random.default_rng(0).normal(size=(len(qids), 2)), T=hash_embed([ptexts[p] for p in pids]),
                           row_query=np.array([qids.index(q) for q in table.column("query_id").to_pylist()]))


def test_cpo_run_search_draws_demonstrations_from_its_training_queries_only() -> None:
    from cpo_engine.workflows.config import RunConfig
    from cpo_engine.workflows.run import generative_search

    table = _table(40)
    reps = _reps(table)
    train, test = np.arange(0, 40, 4), np.setdiff1d(np.arange(40), np.arange(0, 40, 4))
    cfg = RunConfig(proposer=ProposerConfig(kind="examples", options={"k": 2, "min_score": 0.5}, edit_prior=None),
                    beam=BeamConfig(rounds=2, beam_width=2, query_beams=0, children_per_beam=10), device="cpu")
    result = generative_search(table, reps, make_head(), cfg, hash_embed, train=train)
    shown = _demo_queries([c.text for c in result.candidates])
    assert len(shown) >= 5 and shown <= {reps.query_texts[i] for i in train}
    assert not shown & {reps.query_texts[i] for i in test}
    with pytest.raises(ConfigError, match="needs the training rows"):  # no split given: it refuses, never guesses
        generative_search(table, reps, make_head(), cfg, hash_embed)


def test_cpo_run_search_leaves_out_the_queries_verified_from_a_file(tmp_path: Path) -> None:
    """`cpo loop` verifies each round on a query file (``verify.queries``): no demonstration may come from it."""
    from cpo_engine.settings import VerifyConfig
    from cpo_engine.workflows.config import RunConfig
    from cpo_engine.workflows.run import generative_search

    table = _table(12)
    reps = _reps(table)
    train = np.arange(12)
    verified = pa.table({"query_id": ["q00", "q02"], "query_text": [reps.query_texts[0], reps.query_texts[2]],
                         "gold_answer": ["100", "102"]})
    pq.write_table(verified, tmp_path / "verify.parquet")
    cfg = RunConfig(proposer=ProposerConfig(kind="examples", options={"k": 2}, edit_prior=None),
                    beam=BeamConfig(rounds=1, beam_width=2, query_beams=0, children_per_beam=6), device="cpu",
                    verify=VerifyConfig(queries=str(tmp_path / "verify.parquet")))
    shown = _demo_queries([c.text for c in generative_search(table, reps, make_head(), cfg, hash_embed,
                                                             train=train).candidates])
    assert shown == {reps.query_texts[i] for i in (4, 6, 8, 10)}  # the successes (even queries) less q00, q02


def test_cpo_optimize_leaves_out_the_queries_it_will_verify() -> None:
    from cpo_engine.settings import LLMConfig, OptimizeConfig, VerifyConfig
    from cpo_engine.workflows.optimize import search_rows
    from cpo_engine.workflows.verify import sample_queries

    table = _table(20)
    cfg = OptimizeConfig(generation=LLMConfig(), verify=VerifyConfig(max_queries=5))
    verified = set(sample_queries(table, cfg.verify).column("query_id").to_pylist())
    kept = set(search_rows(table, cfg).column("query_id").to_pylist())
    assert len(verified) == 5 and kept == set(table.column("query_id").to_pylist()) - verified
    assert search_rows(table, OptimizeConfig()).num_rows == table.num_rows  # nothing verified: every row


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_cpo_optimize_with_worked_examples_end_to_end(small_example, tmp_path: Path) -> None:
    from cpo_engine.cli import main

    common = ["--set", f"embed.cache_dir={tmp_path / 'cache'}", "--set", "embed.device=cpu"]
    pca = ["--set", "pca.prompt_components=15", "--set", "pca.query_components=4"]
    assert main(["fit", str(small_example), "--out", str(tmp_path / "fit"), "--cv", "3", *common, *pca]) == 0
    out = tmp_path / "opt"
    assert main(["optimize", str(small_example), "--model", str(tmp_path / "fit"), "--out", str(out),
                 "--proposer", "examples", "--set", "proposer.options.k=2", "--rounds", "1", "--children", "3",
                 "--beam-width", "2", *common]) == 0
    cands = pq.read_table(out / "candidates.parquet").to_pandas()
    added = cands[cands.operator == "add_examples"]
    assert len(added) >= 6 and (added.family == "worked_examples").all()
    data = pq.read_table(small_example).to_pandas()
    golds = {" ".join(t.split()): str(int(g)) if float(g).is_integer() else str(g)
             for t, g, s in zip(data.query_text, data.gold_answer, data.score) if s == 1}
    for text in added.text:
        assert _DEMO.findall(text)
        for q, a in _DEMO.findall(text):
            assert golds.get(q) == a, (q, a)  # a logged success, with its gold answer


class _Chat(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        reply(self, json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                     "content": "1. Solve it with care."},
                                             "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": 5, "completion_tokens": 4}}).encode())

    def log_message(self, *args):  # noqa: ANN002
        pass


@pytest.mark.timeout(60)
def test_the_llm_proposer_is_told_what_the_edit_prior_favours(tmp_path: Path) -> None:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Chat)
    srv.bodies = []
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"format": "cpo-edit-prior/1", "default": {},
                                 "tasks": {"math": {"worked_examples": 2.5, "persona": 0.3, "verification": 1.2}}}))
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        llm = make_proposer(ProposerConfig(kind="llm", llm_base_url=url, llm_model="m", edit_prior=str(prior)),
                            task="math")
        kids = llm.propose([Candidate.seed("Be brief.", id="b")], 1, round=1)
        assert [k.text for k in kids] == ["Solve it with care."]
        user = srv.bodies[0]["messages"][1]["content"]
        assert ("adds worked examples (few-shot demonstrations: a question and its answer) tends to help (prior "
                "weight 2.50)") in user
        assert user.index("worked examples") < user.index("verify the answer tends to help (prior weight 1.20)")
        assert "assigns a persona, expert role or panel of experts tends to hurt (prior weight 0.30)" in user
        plain = make_proposer(ProposerConfig(kind="llm", llm_base_url=url, llm_model="m", edit_prior=None))
        plain.propose([Candidate.seed("Be brief.", id="b")], 1, round=1)
        assert "Known effects" not in srv.bodies[1]["messages"][1]["content"]  # no prior: no claim
    finally:
        srv.shutdown()


def test_worked_examples_render_inline_or_as_chat_turns() -> None:
    """A child's demonstrations read back (generation.templating.split_demos) as the parent's text and its pairs;
    ``template.demos='turns'`` sends each as a user turn (laid out as the query is) and an assistant turn before
    the query's; ``inline`` sends the text as it is; a prompt without demonstrations is the same either way."""
    from cpo_engine.generation.templating import TemplateConfig, build_request, split_demos
    from cpo_engine.generation.types import RowKey, SamplingConfig

    kid = _examples(_table(), k=2).propose([PARENT], 1, round=1)[0]
    instruction, demos = split_demos(kid.text)
    assert instruction == PARENT.text and len(demos) == 2 and demos == _DEMO.findall(kid.text)
    key, sampling = RowKey("r", "q", "p", 0), SamplingConfig()
    turns = build_request(TemplateConfig(position="prefix", demos="turns"), key, "What is 7 plus 100?", kid.text, sampling)
    roles = [m["role"] for m in turns.messages]
    assert roles == ["user", "assistant", "user", "assistant", "user"]
    assert turns.messages[0]["content"] == f"{PARENT.text}\n{demos[0][0]}" and turns.messages[1]["content"] == demos[0][1]
    assert turns.messages[-1]["content"] == f"{PARENT.text}\nWhat is 7 plus 100?"
    inline = build_request(TemplateConfig(position="prefix"), key, "What is 7 plus 100?", kid.text, sampling)
    assert [m["content"] for m in inline.messages] == [f"{kid.text}\nWhat is 7 plus 100?"]
    plain = [build_request(TemplateConfig(position="prefix", demos=d), key, "Q?", PARENT.text, sampling).messages
             for d in ("inline", "turns")]
    assert plain[0] == plain[1]
    with pytest.raises(ConfigError, match="demos='turns' needs template.mode='chat'"):
        TemplateConfig(mode="completion", demos="turns")
