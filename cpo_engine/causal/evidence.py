"""How a reported number was obtained: one shared vocabulary for every value the engine prints.

Every policy value or improvement the engine reports is one of three kinds of evidence:

- :data:`MEASURED`: outcomes the policy actually got, from an LLM run of the policy's prompts or from
  held-out recorded outcomes where every (query, prompt) cell it needs was observed;
- :data:`ESTIMATED`: an off-policy estimate from logs drawn by another policy (IPW, doubly robust);
- :data:`PREDICTED`: the reward model's prediction alone (no outcome of this policy was observed).

:class:`LabelledValue` carries a value with its 95% interval and one of these labels, so reports,
JSON outputs and the CLI say which kind every number is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

MEASURED = "measured (LLM run or held-out outcomes)"
ESTIMATED = "estimated (off-policy, from logs)"
PREDICTED = "predicted (reward model only)"
EVIDENCE = (MEASURED, ESTIMATED, PREDICTED)
"""The three labels, strongest evidence first."""


def evidence_kind(label: str) -> str:
    """The one-word kind of a label ('measured', 'estimated', 'predicted'); ValueError otherwise."""
    if label not in EVIDENCE:
        raise ValueError(f"evidence must be one of {EVIDENCE}, got {label!r}")
    return label.split(" ", 1)[0]


@dataclass(frozen=True)
class LabelledValue:
    """A value with its 95% interval and the kind of evidence behind it.

    Parameters
    ----------
    value : float
        The point value (a policy value, or a difference of two policy values).
    ci_low, ci_high : float or None
        The 95% interval; None when no interval exists (say why in ``note``).
    evidence : str
        One of :data:`MEASURED`, :data:`ESTIMATED`, :data:`PREDICTED`.
    method : str
        How it was computed, e.g. "held-out recorded outcomes", "doubly robust", "causal model".
    n : int or None
        Number of queries (or rows) behind the value.
    note : str
        Anything a reader must know (a warning, why there is no interval).
    """

    value: float
    ci_low: float | None
    ci_high: float | None
    evidence: str
    method: str = ""
    n: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        evidence_kind(self.evidence)

    @property
    def kind(self) -> str:
        """'measured', 'estimated' or 'predicted'."""
        return evidence_kind(self.evidence)

    def describe(self, digits: int = 4) -> str:
        """One line: value, interval, evidence and method, e.g. for the CLI or a report."""
        ci = ("" if self.ci_low is None or self.ci_high is None
              else f" (95% CI {self.ci_low:.{digits}f} to {self.ci_high:.{digits}f})")
        how = f", {self.method}" if self.method else ""
        return f"{self.value:.{digits}f}{ci} [{self.kind}{how}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (NaN/inf written as None) with the one-word ``kind`` added."""
        d = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        return d | {"kind": self.kind}


NO_DEPARTURES = "same as the static prompt (no departures)"


def is_no_difference(diff: float | None, low: float | None, high: float | None) -> bool:
    """A difference that is exactly 0 with a zero-width interval: the policy never left its reference, so
    there is nothing to be uncertain about (not a certain zero effect)."""
    return all(v is not None and math.isfinite(v) and abs(v) < 1e-12 for v in (diff, low, high))


def format_difference(diff: float, low: float, high: float, same: str = NO_DEPARTURES) -> str:
    """``+0.0123 (95% CI -0.0040 to +0.0286)``, or ``same`` for a policy that never departs from its
    reference (a zero difference with a zero-width interval reads as certainty it is not)."""
    if is_no_difference(diff, low, high):
        return same
    return f"{diff:+.4f} (95% CI {low:+.4f} to {high:+.4f})"


__all__ = ["EVIDENCE", "ESTIMATED", "MEASURED", "NO_DEPARTURES", "PREDICTED", "LabelledValue", "evidence_kind",
           "format_difference", "is_no_difference"]
