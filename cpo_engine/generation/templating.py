"""How a query and a prompt become one LLM input, and prefix-aware request ordering.

The prompt can go before the query (``prefix``), after it (``suffix``, how the Prompt-OIRL logs
were made: ``"{query}{prompt}"``), or into the system message (``system``, chat only). The input is
either one completion string or a list of chat messages. ``format`` overrides the layout with a
``str.format`` template over ``{query}`` and ``{prompt}``.

Worked examples in a prompt (``Q: ...`` / ``A: ...`` line pairs, :func:`demo_block`, as the ``examples``
proposer writes them) stay in the prompt text (``demos="inline"``) or become earlier chat turns
(``demos="turns"``): each example a user turn (its question laid out with the rest of the prompt, as the query
is) and an assistant turn (its answer), then the query's own turn; how DSPy puts few-shot demonstrations in a
chat (its adapters' demos), and on SmolLM2-135M the difference between demonstrations that help and ones it
copies (bench/results/vs_dspy_*).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from cpo_engine.exceptions import ConfigError
from cpo_engine.generation.types import GenerationRequest, RowKey, SamplingConfig


POSITIONS = ("suffix", "prefix", "system")
DEMOS = ("inline", "turns")
Q_MARK, A_MARK = "Q: ", "A: "


@dataclass(frozen=True)
class TemplateConfig:
    """Layout of the LLM input.

    Attributes
    ----------
    position : str
        ``"suffix"`` (query then prompt), ``"prefix"`` (prompt then query) or ``"system"`` (the
        prompt is the system message; chat only).
    mode : str
        ``"chat"`` (a list of messages) or ``"completion"`` (one string).
    separator : str
        Put between query and prompt (``"\\n"`` by default; Prompt-OIRL svamp/mawps used ``""``).
    format : str or None
        A ``str.format`` template over ``{query}`` and ``{prompt}``; overrides position/separator.
    system : str or None
        A fixed system message (chat mode, positions prefix/suffix).
    demos : str
        ``"inline"`` (worked examples stay in the prompt text) or ``"turns"`` (chat mode: each becomes a
        user turn and an assistant turn before the query's).
    """

    position: str = field(default="suffix", metadata={"choices": POSITIONS})
    mode: str = field(default="chat", metadata={"choices": ("chat", "completion")})
    separator: str = "\n"
    format: str | None = None
    system: str | None = None
    demos: str = field(default="inline", metadata={"choices": DEMOS})

    def __post_init__(self) -> None:
        if self.position not in POSITIONS:
            raise ConfigError(f"template.position must be prefix, suffix or system, got '{self.position}'")
        if self.mode not in ("chat", "completion"):
            raise ConfigError(f"template.mode must be chat or completion, got '{self.mode}'")
        if self.position == "system" and self.mode != "chat":
            raise ConfigError("template.position='system' needs template.mode='chat'")
        if self.demos not in DEMOS:
            raise ConfigError(f"template.demos must be inline or turns, got '{self.demos}'")
        if self.demos == "turns" and self.mode != "chat":
            raise ConfigError("template.demos='turns' needs template.mode='chat' (a completion input has no turns)")
        if self.format is not None:
            try:
                self.format.format(query="q", prompt="p")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(
                    f"template.format must use only {{query}} and {{prompt}} fields, got {self.format!r} ({exc})"
                ) from exc


def render_user(cfg: TemplateConfig, query: str, prompt: str) -> str:
    """The user-turn text (or the whole completion input)."""
    if cfg.format is not None:
        return cfg.format.format(query=query, prompt=prompt)
    if cfg.position == "system":
        return query
    if cfg.position == "prefix":
        return f"{prompt}{cfg.separator}{query}" if prompt else query
    return f"{query}{cfg.separator}{prompt}" if prompt else query


def demo_block(question: str, answer: str) -> str:
    """One worked example as a prompt holds it: a ``Q: `` line and an ``A: `` line (whitespace collapsed, so each
    is one line); :func:`split_demos` reads it back."""
    return f"{Q_MARK}{' '.join(str(question).split())}\n{A_MARK}{' '.join(str(answer).split())}"


def split_demos(prompt: str) -> tuple[str, list[tuple[str, str]]]:
    r"""``prompt`` as (its text without worked examples, the examples' (question, answer) pairs): a line starting
    ``Q: `` directly followed by one starting ``A: `` is an example; the other lines, joined by spaces, are the
    instruction.

    >>> split_demos("Be brief.\nQ: 2 + 3?\nA: 5\nThe answer is:")
    ('Be brief. The answer is:', [('2 + 3?', '5')])
    """
    lines, rest, demos, i = prompt.split("\n"), [], [], 0
    while i < len(lines):
        if lines[i].startswith(Q_MARK) and i + 1 < len(lines) and lines[i + 1].startswith(A_MARK):
            demos.append((lines[i][len(Q_MARK):].strip(), lines[i + 1][len(A_MARK):].strip()))
            i += 2
        else:
            rest.append(lines[i])
            i += 1
    return (" ".join(x.strip() for x in rest if x.strip()), demos) if demos else (prompt, [])


def build_request(
    cfg: TemplateConfig, key: RowKey, query: str, prompt: str, sampling: SamplingConfig
) -> GenerationRequest:
    """Render one (query, prompt, sample) cell into a request."""
    if cfg.mode == "completion":
        return GenerationRequest(key=key, text=render_user(cfg, query, prompt), sampling=sampling)
    instruction, demos = split_demos(prompt) if cfg.demos == "turns" else (prompt, [])
    system = instruction if cfg.position == "system" else cfg.system
    messages: tuple[dict[str, str], ...] = ({"role": "system", "content": system},) if system else ()
    for q, a in demos:
        messages += ({"role": "user", "content": render_user(cfg, q, instruction)}, {"role": "assistant", "content": a})
    return GenerationRequest(key=key, messages=messages + ({"role": "user", "content": render_user(cfg, query, instruction)},),
                             sampling=sampling)


def prefix_order(texts: Sequence[str]) -> np.ndarray:
    """A permutation that puts inputs sharing the longest prefix next to each other.

    Lexicographic order is a depth-first walk of the prefix trie, so every pair of adjacent inputs
    shares the longest prefix any neighbour could: an engine with a prefix cache (vLLM automatic
    prefix caching, llama.cpp's slot cache) recomputes only the part after the shared prefix.
    Ties keep their input order (stable), so the order is deterministic.
    """
    return np.array(sorted(range(len(texts)), key=texts.__getitem__), dtype=np.int64)


def shared_prefix_chars(texts: Sequence[str]) -> int:
    """Characters shared with the previous input, summed over a sequence: what ordering saves."""
    total = 0
    for a, b in zip(texts, texts[1:]):
        n = min(len(a), len(b))
        i = 0
        while i < n and a[i] == b[i]:
            i += 1
        total += i
    return total


__all__ = ["TemplateConfig", "render_user", "build_request", "demo_block", "split_demos", "prefix_order",
           "shared_prefix_chars"]
