"""Graders: turn an LLM answer and a gold answer into a score in [0, 1].

Every grader has ``extract(text)`` (the answer it read, for the ``parsed_answer`` column) and
``grade(text, gold)``; a missing answer (a failed call) grades as NaN, never as 0. Build one from a
string spec with :func:`get_grader`:

==========================  ==============================================================
``numeric``                 math word problems: "the answer is", ``####``, ``\\boxed{}``, else
                            the last number (commas, currency, units and % handled)
``numeric:last_number``     the last number in the text
``numeric:answer_is``       only an explicit "the answer is ..." / ``####`` / ``\\boxed{}``
``numeric:final_sentence``  1 if the gold number is among the numbers of the last sentence
                            that holds a number
``exact``                   exact string match (whitespace-stripped)
``normalized``              case, punctuation, articles and whitespace ignored
``choice`` (or ``mc``)      multiple-choice letter (``(B)``, ``Answer: B``, ``B.``); ``choice:ABCD``
                            names the letters
``regex:<pattern>``         group ``answer`` (or 1, or the whole match) of the last match,
                            compared numerically when both sides are numbers
``<module>:<function>``     a user function ``fn(text, gold) -> float | bool`` (also
                            ``function:<module>:<function>``)
==========================  ==============================================================
"""

from __future__ import annotations

import importlib
import math
import re
import string
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from cpo_engine.exceptions import ConfigError

_NUM = (
    r"(?<![\w.])[-−]?(?:[$€£¥₹][ ]?)?"
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[ ]?/[ ]?\d+(?:\.\d+)?)?"
    r"(?!\d|\.\d|,\d{3})"
)
_NUM_RE = re.compile(_NUM)
# "the answer is 42": the number must follow on the same line and not start an expression
# ("answer: 10 - 4 = 6" reads nothing here, and the last-number rule takes over).
_NOT_EXPR = r"(?!\s*[-+*/×x÷=]\s*\d)"
_ANSWER_IS_RE = re.compile(
    r"(?:final answer|the answer|answer)\s*(?:is|=|:)[ \t:*]*(" + _NUM + ")" + _NOT_EXPR, re.IGNORECASE,
)
_HASHES_RE = re.compile(r"####\s*(" + _NUM + ")")
_BOXED_RE = re.compile(r"\\boxed\{\s*(" + _NUM + r")[^}]*\}")
_SENTENCE_SPLIT_RE = re.compile(r"(?<!\d)[.!?]|[.!?](?!\d)|\n")  # "6.84" is not a sentence end


class Grader(Protocol):
    name: str

    def extract(self, text: str | None) -> str | None:
        ...

    def grade(self, text: str | None, gold: Any) -> float:
        ...


def parse_number(token: str) -> float | None:
    """``"$1,234.50"`` -> 1234.5, ``"3/4"`` -> 0.75, ``"-7"``/``"−7"`` -> -7.0; None if no number."""
    s = token.strip().replace("−", "-").replace(",", "")
    s = re.sub(r"[$€£¥₹\s]", "", s)
    try:
        if "/" in s:
            num, den = s.split("/", 1)
            return float(num) / float(den) if float(den) != 0 else None
        return float(s)
    except ValueError:
        return None


def find_numbers(text: str) -> list[float]:
    """Every number in the text, in order (see :func:`parse_number` for the formats read)."""
    out = [parse_number(m.group(0)) for m in _NUM_RE.finditer(text)]
    return [x for x in out if x is not None]


def numbers_match(a: float, b: float, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel_tol, abs_tol=abs_tol)


def final_sentence(text: str, with_number: bool = False) -> str:
    """The last non-empty sentence (a split on . ! ? outside numbers, and on newlines).

    ``with_number``: the last sentence that holds a number, so a closing "Great job!" or an emoji
    line does not hide the answer.
    """
    parts = [p.strip() for p in _SENTENCE_SPLIT_RE.split(text)]
    parts = [p for p in parts if p and (not with_number or find_numbers(p))]
    return parts[-1] if parts else ""


def _to_float(gold: Any) -> float | None:
    if gold is None:
        return None
    if isinstance(gold, (int, float)):
        return None if isinstance(gold, float) and math.isnan(gold) else float(gold)
    return parse_number(str(gold))


def _missing(text: str | None) -> bool:
    return text is None


@dataclass
class NumericGrader:
    """Numeric answer match for math word problems.

    Parameters
    ----------
    strategy : str
        ``auto`` (explicit answer marker if present, else the last number), ``last_number``,
        ``answer_is`` (explicit marker only; no marker scores 0) or ``final_sentence`` (gold among
        the numbers of the last sentence that holds a number).
    rel_tol, abs_tol : float
        Tolerances of ``math.isclose`` between the answer read and the gold number.
    """

    strategy: str = "auto"
    rel_tol: float = 1e-4
    abs_tol: float = 1e-6

    def __post_init__(self) -> None:
        if self.strategy not in ("auto", "last_number", "answer_is", "final_sentence"):
            raise ConfigError(
                f"numeric grader strategy must be auto, last_number, answer_is or final_sentence, got '{self.strategy}'"
            )

    @property
    def name(self) -> str:
        return "numeric" if self.strategy == "auto" else f"numeric:{self.strategy}"

    def _marked(self, text: str) -> float | None:
        for rx in (_HASHES_RE, _BOXED_RE, _ANSWER_IS_RE):
            hits = list(rx.finditer(text))
            if hits:
                return parse_number(hits[-1].group(1))
        return None

    def extract(self, text: str | None) -> str | None:
        if not text:
            return None
        if self.strategy == "final_sentence":
            return final_sentence(text, with_number=True) or None
        value = self._marked(text) if self.strategy in ("auto", "answer_is") else None
        if value is None and self.strategy in ("auto", "last_number"):
            nums = find_numbers(text)
            value = nums[-1] if nums else None
        return None if value is None else repr(value)

    def grade(self, text: str | None, gold: Any) -> float:
        if _missing(text):
            return math.nan
        g = _to_float(gold)
        if g is None:
            raise ConfigError(f"numeric grader needs a numeric gold answer, got {gold!r}")
        if self.strategy == "final_sentence":
            last = final_sentence(text, with_number=True)
            return float(any(numbers_match(x, g, self.rel_tol, self.abs_tol) for x in find_numbers(last)))
        got = self.extract(text)
        return float(got is not None and numbers_match(float(got), g, self.rel_tol, self.abs_tol))


def normalize_text(text: str) -> str:
    """SQuAD-style normalization: lowercase, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


@dataclass
class ExactGrader:
    """Exact match after stripping whitespace; ``normalized=True`` also ignores case/punctuation/articles."""

    normalized: bool = False

    @property
    def name(self) -> str:
        return "normalized" if self.normalized else "exact"

    def extract(self, text: str | None) -> str | None:
        if text is None:
            return None
        return normalize_text(text) if self.normalized else text.strip()

    def grade(self, text: str | None, gold: Any) -> float:
        if _missing(text):
            return math.nan
        return float(self.extract(text) == self.extract(str(gold)))


@dataclass
class MultipleChoiceGrader:
    """Multiple-choice letter: reads ``Answer: B``, ``(B)``, ``B.`` or a lone ``B`` line.

    An explicit "answer is/:" marker wins (case-insensitive); otherwise the last bracketed or
    line-leading capital letter among ``letters``. Gold may be ``"B"``, ``"(b)"`` or a 0-based index.
    """

    letters: str = "ABCDE"
    name: str = "mc"

    def extract(self, text: str | None) -> str | None:
        if not text:
            return None
        cls = "[" + re.escape(self.letters + self.letters.lower()) + "]"
        upper = "[" + re.escape(self.letters) + "]"
        patterns = (
            re.compile(rf"answer\s*(?:is|:)\s*(?:option\s*)?\(?({cls})\)?(?![A-Za-z])", re.IGNORECASE),
            re.compile(rf"\(({upper})\)"),
            re.compile(rf"^\s*({upper})(?:[.):]|\s*$)", re.MULTILINE),
        )
        for rx in patterns:
            hits = rx.findall(text)
            if hits:
                return hits[-1].upper()
        return None

    def grade(self, text: str | None, gold: Any) -> float:
        if _missing(text):
            return math.nan
        g = self.letters[int(gold)] if isinstance(gold, int) else str(gold).strip().strip("()").upper()
        return float(self.extract(text) == g)


@dataclass
class RegexGrader:
    """Reads the answer with a regular expression, then compares it with gold.

    The last match wins; its group ``answer`` (or group 1, or the whole match) is the answer.
    Both sides numeric -> numeric match, else normalized text match.
    """

    pattern: str

    def __post_init__(self) -> None:
        try:
            self._rx = re.compile(self.pattern, re.IGNORECASE | re.MULTILINE)
        except re.error as exc:
            raise ConfigError(f"regex grader: invalid pattern {self.pattern!r}: {exc}") from exc

    @property
    def name(self) -> str:
        return f"regex:{self.pattern}"

    def extract(self, text: str | None) -> str | None:
        if not text:
            return None
        hits = list(self._rx.finditer(text))
        if not hits:
            return None
        m = hits[-1]
        if "answer" in m.groupdict():
            return m.group("answer")
        return m.group(1) if m.re.groups else m.group(0)

    def grade(self, text: str | None, gold: Any) -> float:
        if _missing(text):
            return math.nan
        got = self.extract(text)
        if got is None:
            return 0.0
        a, g = parse_number(got), _to_float(gold)
        if a is not None and g is not None:
            return float(numbers_match(a, g))
        return float(normalize_text(got) == normalize_text(str(gold)))


@dataclass
class FunctionGrader:
    """A user grader given by import path ``package.module:function``; it returns a float or bool."""

    path: str

    def __post_init__(self) -> None:
        self._fn = load_callable(self.path)

    @property
    def name(self) -> str:
        return f"function:{self.path}"

    def extract(self, text: str | None) -> str | None:
        return None

    def grade(self, text: str | None, gold: Any) -> float:
        if _missing(text):
            return math.nan
        out = self._fn(text, gold)
        try:
            return float(out)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"grader function {self.path} must return a float or bool, got {out!r}") from exc


def load_callable(path: str) -> Callable[..., Any]:
    """Import ``package.module:function`` (or ``package.module.function``) with a clear error."""
    mod_name, sep, attr = path.partition(":")
    if not sep:
        mod_name, _, attr = path.rpartition(".")
    if not mod_name or not attr:
        raise ConfigError(f"grader function must look like 'package.module:function', got '{path}'")
    try:
        obj: Any = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"grader function '{path}': cannot import module '{mod_name}' ({exc})") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"grader function '{path}': module '{mod_name}' has no attribute '{attr}'")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"grader function '{path}' is not callable")
    return obj


def get_grader(spec: str | Grader) -> Grader:
    """Build a grader from its spec string (see the module docstring); graders pass through."""
    if not isinstance(spec, str):
        return spec
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "numeric":
        return NumericGrader(strategy=arg or "auto")
    if kind in ("exact", "normalized") and not arg:
        return ExactGrader(normalized=kind == "normalized")
    if kind in ("mc", "multiple_choice", "choice"):
        return MultipleChoiceGrader(letters=arg.upper() or "ABCDE")
    if kind == "regex" and arg:
        return RegexGrader(arg)
    if kind in ("function", "py") and arg:
        return FunctionGrader(arg)
    if arg and _IMPORT_PATH.fullmatch(spec.strip()):  # package.module:function
        return FunctionGrader(spec.strip())
    raise ConfigError(
        f"unknown grader '{spec}': use numeric[:last_number|answer_is|final_sentence], exact, normalized, "
        "choice[:ABCD] (or mc), regex:<pattern> or <module>:<function> (or function:<module>:<fn>)"
    )


_IMPORT_PATH = re.compile(r"[A-Za-z_][\w]*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


__all__ = [
    "Grader", "NumericGrader", "ExactGrader", "MultipleChoiceGrader", "RegexGrader", "FunctionGrader",
    "get_grader", "parse_number", "find_numbers", "final_sentence", "normalize_text", "load_callable",
]
