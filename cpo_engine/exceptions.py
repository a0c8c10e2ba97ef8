"""Errors users can act on. The CLI prints the message of any CPOError and exits 2, no traceback."""

from __future__ import annotations

from typing import Sequence


class CPOError(Exception):
    """Base class: an error whose message tells the user what went wrong and how to fix it."""


class DataError(CPOError, ValueError):
    """Bad triplet data: the message names the source, column and first offending rows."""

    def __init__(
        self,
        problem: str,
        *,
        source: str | None = None,
        column: str | None = None,
        rows: Sequence[int] | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem, self.source, self.column, self.fix = problem, source, column, fix
        self.rows = list(rows) if rows is not None else None
        super().__init__(self._format())

    def _format(self) -> str:
        where = [f"in {self.source}"] if self.source else []
        if self.column:
            where.append(f"column '{self.column}'")
        if self.rows:
            shown = ", ".join(str(r) for r in self.rows[:5])
            more = f" (and {len(self.rows) - 5} more)" if len(self.rows) > 5 else ""
            where.append(f"rows {shown}{more}")
        msg = (", ".join(where) + ": " if where else "") + self.problem
        return msg + (f"\n  fix: {self.fix}" if self.fix else "")


class ConfigError(CPOError, ValueError):
    """A bad configuration value or file."""


class NotFittedError(CPOError, AttributeError):
    """An estimator was used before `fit`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"This {name} instance is not fitted yet: call fit(...) first.")


class MissingExtraError(CPOError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


class DataWarning(UserWarning):
    """Data that is valid but probably not what the user meant (e.g. an id that reads as missing)."""


class BusyError(CPOError, RuntimeError):
    """A run folder or cache is being written by another process (its lock file is held)."""


class BackendError(CPOError, RuntimeError):
    """An LLM backend failed every call it was given: the message names the endpoint, the first error
    and the fix (nothing usable came back, so going on would report an empty result as a success)."""


class BudgetExhausted(CPOError, RuntimeError):
    """A run reached its cap on LLM calls (``--max-calls``): every call made so far is committed, and
    rerunning the same command with a larger cap continues without repeating one."""


__all__ = ["CPOError", "DataError", "ConfigError", "NotFittedError", "MissingExtraError", "DataWarning", "BusyError",
           "BackendError", "BudgetExhausted"]
