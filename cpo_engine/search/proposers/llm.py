"""The LLM proposer: children written by an LLM from a meta-prompt showing the parent and what the
causal model found strong and weak about it, and (with an edit prior, ``proposer.edit_prior``) which kinds
of edits tend to help or hurt on the task (:meth:`LLMProposer.prior_hints`).

Any :class:`cpo_engine.generation.types.Backend` serves (vLLM, or the OpenAI-compatible client for
a local llama.cpp server). An LLM may fail or answer with no usable rewrite (small models often
answer the task instead of rewriting the prompt): neither is an error of the search, so both are
counted on the proposer (:attr:`LLMProposer.failed_calls`, :attr:`LLMProposer.unusable_calls`)
and logged, and the round goes on with the children that did parse. When *every* call of a round
fails (a dead or unreachable server), the proposer raises
:class:`~cpo_engine.exceptions.BackendError`: a search without its proposer would report the seeds
as "searched" and look like a success.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import replace
from typing import Any, Sequence

from cpo_engine.exceptions import BackendError
from cpo_engine.search.candidates import Candidate, unique
from cpo_engine.search.proposers import register_proposer
from cpo_engine.search.proposers.base import Feedback

log = logging.getLogger(__name__)

META_SYSTEM = (
    "You improve instructions (prompts) that are given to an AI model together with a task. "
    "You reply with rewritten prompts only: one per line, numbered, no commentary."
)


def meta_prompt(parent: Candidate, n: int, feedback: Feedback | None) -> str:
    """The user message asking for ``n`` rewrites of ``parent``, with the model's feedback."""
    lines = [f"Here is the current prompt:\n<prompt>{parent.text}</prompt>"]
    if feedback is not None:
        if feedback.summary:
            lines.append(f"An offline evaluation says: {feedback.summary}.")
        if feedback.strong:
            lines.append("It works best on tasks like:\n" + "\n".join(f"- {q}" for q in feedback.strong))
        if feedback.weak:
            lines.append("It works worst on tasks like:\n" + "\n".join(f"- {q}" for q in feedback.weak))
        if feedback.hints:
            lines.append("Known effects of kinds of edits on this task: " + "; ".join(feedback.hints) + ".")
    lines.append(f"Write {n} different improved versions of the prompt that keep what works and fix what "
                 f"does not. Each version is one paragraph of at most 60 words. Output exactly {n} "
                 "lines, numbered 1. to " + f"{n}.")
    return "\n\n".join(lines)


_NUMBERED = re.compile(r"^\s*(?:(?:\d+[.)]|[-*\u2022])\s*)+")


def parse_rewrites(text: str, parent_text: str, max_words: int, exclude: Sequence[str] = ()) -> list[str]:
    """Prompts from an LLM reply: its numbered or bulleted lines (every line if none is numbered),
    stripped of numbering, quotes and tags; echoes of the parent or of ``exclude`` are dropped."""
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    numbered = [ln for ln in lines if _NUMBERED.match(ln)]
    drop = {t.strip().lower() for t in (parent_text, *exclude)}
    out = []
    for line in numbered or lines:
        s = _NUMBERED.sub("", line).strip().strip('"').strip("'").strip()
        s = re.sub(r"</?prompt>", "", s).strip()
        if 2 <= len(s.split()) <= max_words and s.lower() not in drop:
            out.append(s)
    return out


class LLMProposer:
    """Children written by an LLM from a meta-prompt that shows the parent and the model's feedback.

    Parameters
    ----------
    backend : cpo_engine.generation.types.Backend
        Any backend (vLLM, OpenAI-compatible HTTP incl. a local llama.cpp server, ...).
    sampling : cpo_engine.generation.types.SamplingConfig, optional
        Default: temperature 0.8, top_p 0.95, 384 tokens, seed from ``seed``.
    per_call : int
        Rewrites asked for in one request; more requests (different sample seeds) fill n_children.
    seed : int
        Base seed; requests are keyed (round, parent, call) so a rerun asks for the same samples.
    max_words : int
        Rewrites longer than this are dropped.
    prior : EditPrior, optional
        Edit-family weights; the families it favours and disfavours most for ``task`` are named in the
        meta-prompt (:meth:`prior_hints`), so the rewrites lean the way the edit analysis found helps.
    task : str, optional
        Which task's weights of the prior to use.

    Attributes
    ----------
    calls : int
        LLM requests sent so far (over every :meth:`propose`).
    failed_calls : int
        Requests the backend answered with an error (connection, HTTP status, timeout, ...).
    unusable_calls : int
        Requests answered without error whose reply held no rewrite :func:`parse_rewrites` accepts
        (e.g. the model answered the example task instead of rewriting the prompt).
    usable_calls : int
        Requests whose reply gave at least one rewrite; ``calls == failed_calls + unusable_calls +
        usable_calls``.
    rewrites : int
        Rewrites parsed from the usable replies, before deduplication.
    accepted : int
        Children returned (new, distinct, at most ``n_children`` per parent); ``accepted <= rewrites``.
    """

    operator = "llm_rewrite"
    wants_feedback = True

    def __init__(self, backend: Any, sampling: Any = None, per_call: int = 4, seed: int = 0,
                 max_words: int = 120, prior: Any = None, task: str | None = None, n_hints: int = 3) -> None:
        self.backend, self.sampling, self.per_call = backend, sampling, per_call
        self.seed, self.max_words = seed, max_words
        self.prior, self.task, self.n_hints = prior, task, n_hints
        self.calls = self.failed_calls = self.unusable_calls = self.usable_calls = 0
        self.rewrites = self.accepted = 0

    def stats(self) -> dict[str, int]:
        """The counters as a dict (for traces and logs)."""
        return {k: getattr(self, k) for k in ("calls", "failed_calls", "unusable_calls", "usable_calls",
                                               "rewrites", "accepted")}

    def prior_hints(self) -> list[str]:
        """The edit prior in words: up to ``n_hints`` families it favours (weight > 1, highest first), then up
        to ``n_hints`` it disfavours (weight < 1, lowest first), e.g. "adding worked examples (...) tends to
        help (prior weight 1.40)"; none without a prior or where every weight is 1."""
        if self.prior is None:
            return []
        from cpo_engine.taxonomy import EDIT_FAMILIES

        w = self.prior.weights(self.task)
        up = sorted((f for f in w if w[f] > 1.0 and f != "recombination"), key=lambda f: -w[f])[:self.n_hints]
        down = sorted((f for f in w if w[f] < 1.0 and f != "recombination"), key=lambda f: w[f])[:self.n_hints]
        return ([f"an edit that {EDIT_FAMILIES[f]} tends to help (prior weight {w[f]:.2f})" for f in up]
                + [f"an edit that {EDIT_FAMILIES[f]} tends to hurt (prior weight {w[f]:.2f})" for f in down])

    def _sampling(self) -> Any:
        from cpo_engine.generation.types import SamplingConfig

        return self.sampling or SamplingConfig(temperature=0.8, top_p=0.95, max_tokens=384, seed=self.seed)

    def requests(self, parents: Sequence[Candidate], n_children: int, round: int,
                 feedback: dict[str, Feedback] | None) -> list[Any]:
        """One chat request per (parent, call); ``ceil(n_children / per_call)`` calls per parent."""
        from cpo_engine.generation.types import GenerationRequest, RowKey

        calls = max(1, math.ceil(n_children / self.per_call))
        hints, reqs = self.prior_hints(), []
        for parent in parents:
            fb = (feedback or {}).get(parent.id)
            if hints and not (fb and fb.hints):  # the search's own hints, when it gives some, win
                fb = replace(fb or Feedback(), hints=hints)
            user = meta_prompt(parent, self.per_call, fb)
            msgs = ({"role": "system", "content": META_SYSTEM}, {"role": "user", "content": user})
            for j in range(calls):
                key = RowKey(run_id="search", query_id=f"round{round}", prompt_id=parent.id, sample=j)
                reqs.append(GenerationRequest(key=key, messages=msgs, sampling=self._sampling()))
        return reqs

    def propose(self, parents: Sequence[Candidate], n_children: int, *, round: int,
                seen: set[str] | None = None, feedback: dict[str, Feedback] | None = None) -> list[Candidate]:
        """Rewrites of each parent. Failed and unusable requests give no child; they are counted on
        the proposer and logged (the search goes on with what parsed), unless every request of the round
        failed: then :class:`BackendError`."""
        reqs = self.requests(parents, n_children, round, feedback)
        by_id = {p.id: p for p in parents}
        kids: dict[str, list[Candidate]] = {p.id: [] for p in parents}
        failed, unusable, first_error = 0, 0, None
        responses = self.backend.generate(reqs)
        from cpo_engine.utils import LEDGER

        LEDGER.llm(len(responses), sum(r.prompt_tokens or 0 for r in responses),  # the run's cost ledger: the
                   sum(r.completion_tokens or 0 for r in responses))  # search stage's LLM calls
        for resp in responses:
            parent = by_id[resp.key.prompt_id]
            if resp.error is not None or resp.text is None:
                failed += 1
                first_error = first_error or resp.error
                continue
            fb = (feedback or {}).get(parent.id)
            shown = [*fb.strong, *fb.weak] if fb else []
            texts = parse_rewrites(resp.text, parent.text, self.max_words, exclude=shown)
            unusable += not texts
            self.rewrites += len(texts)
            kids[parent.id].extend(Candidate.child(t, parent, self.operator, None, round) for t in texts)
        out = self._fresh(kids, seen, parents, n_children)
        self._count(len(reqs), failed, unusable, len(out))
        if reqs and failed == len(reqs):
            raise BackendError(
                f"all {failed} calls of the LLM proposer failed in round {round} (first error: {first_error}), so "
                f"it proposed nothing.\n  fix: check that the LLM server behind {self.backend!r} is up "
                "(proposer.llm_base_url, proposer.llm_model), or search with --proposer edit")
        if failed or unusable:
            log.warning("LLM proposer, round %d: %d calls, %d failed%s, %d with no usable rewrite; %d children",
                        round, len(reqs), failed, f" (first: {first_error})" if first_error else "", unusable,
                        len(out))
        return out

    @staticmethod
    def _fresh(kids: dict[str, list[Candidate]], seen: set[str] | None, parents: Sequence[Candidate],
               n_children: int) -> list[Candidate]:
        """New, distinct children, at most ``n_children`` per parent, in parent order."""
        taken = set(seen or ()) | {p.key for p in parents}
        out: list[Candidate] = []
        for cands in kids.values():
            fresh = unique(cands, taken)[:n_children]
            taken.update(c.key for c in fresh)
            out.extend(fresh)
        return out

    def _count(self, calls: int, failed: int, unusable: int, accepted: int) -> None:
        self.calls += calls
        self.failed_calls += failed
        self.unusable_calls += unusable
        self.usable_calls += calls - failed - unusable
        self.accepted += accepted


@register_proposer("llm", help="rewrites by an LLM on an OpenAI-compatible server (--llm-base-url)",
                   options={"per_call": 4, "max_words": 120}, needs_server=True)
def make_llm_proposer(cfg: Any, *, task: str | None = None, seed: int = 0, per_call: int = 4,
                      max_words: int = 120) -> LLMProposer:
    """The registered ``llm``: an :class:`LLMProposer` on the server ``cfg.llm_base_url`` (model ``cfg.llm_model``)."""
    # The LLM backend (HTTP client) is imported only when an LLM proposer is asked for.
    from cpo_engine.generation.backends import BackendConfig, OpenAIConfig, make_backend
    from cpo_engine.search.proposers.edit import load_prior

    backend = make_backend(BackendConfig(kind="openai", model=cfg.llm_model,
                                         openai=OpenAIConfig(base_url=cfg.llm_base_url)))
    return LLMProposer(backend, per_call=per_call, seed=seed, max_words=max_words, prior=load_prior(cfg.edit_prior),
                       task=cfg.task if cfg.task is not None else task)


__all__ = ["LLMProposer", "META_SYSTEM", "make_llm_proposer", "meta_prompt", "parse_rewrites"]
