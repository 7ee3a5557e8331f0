"""Periods with SQL:2011 semantics, for filtering events (instants) and states (intervals).

===============================  ===========================  ==================================
period                           an event at ``t`` is in it   a state ``[valid_from, valid_to)``
===============================  ===========================  ==================================
``Period.from_to(a, b)``         ``a <= t < b``               overlaps ``[a, b)``
``Period.between(a, b)``         ``a <= t <= b``              overlaps ``[a, b]``
``Period.contained_in(a, b)``    ``a <= t <= b``              opened and closed inside ``[a, b]``
``Period.all()``                 always                       always
===============================  ===========================  ==================================

A state whose ``valid_to`` is null (the current one) never closes, so it is never *contained*.

>>> Period.from_to("2024-01-01", "2024-02-01").events_sql("recorded_at")
"recorded_at >= TIMESTAMPTZ '2024-01-01T00:00:00+00:00' AND recorded_at < TIMESTAMPTZ '2024-02-01T00:00:00+00:00'"
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from esanalytics._typing import TimeLike
from esanalytics.engine import sql_time
from esanalytics.events import to_utc
from esanalytics.exceptions import ValidationError

__all__ = ["Period"]

Kind = Literal["from_to", "between", "contained_in", "all"]


@dataclass(frozen=True)
class Period:
    kind: Kind
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def _make(cls, kind: Kind, start: TimeLike, end: TimeLike) -> Period:
        a, b = to_utc(start, what="period start"), to_utc(end, what="period end")
        if b < a:
            raise ValidationError(
                f"The period ends ({b.isoformat()}) before it starts ({a.isoformat()}).",
                hint="swap the two times.",
            )
        return cls(kind, a, b)

    @classmethod
    def from_to(cls, start: TimeLike, end: TimeLike) -> Period:
        """``FROM start TO end``: half-open, ``[start, end)``."""
        return cls._make("from_to", start, end)

    @classmethod
    def between(cls, start: TimeLike, end: TimeLike) -> Period:
        """``BETWEEN start AND end``: closed, ``[start, end]``."""
        return cls._make("between", start, end)

    @classmethod
    def contained_in(cls, start: TimeLike, end: TimeLike) -> Period:
        """``CONTAINED IN (start, end)``: what opened and closed inside."""
        return cls._make("contained_in", start, end)

    @classmethod
    def all(cls) -> Period:
        """``ALL``: everything."""
        return cls("all")

    def events_sql(self, column: str) -> str:
        """SQL: an instant in ``column`` lies in the period."""
        if self.kind == "all":
            return "TRUE"
        a, b = sql_time(self.start), sql_time(self.end)  # type: ignore[arg-type]
        upper = "<" if self.kind == "from_to" else "<="
        return f"{column} >= {a} AND {column} {upper} {b}"

    def states_sql(self, start: str = "valid_from", end: str = "valid_to") -> str:
        """SQL: a state ``[start, end)`` (``end`` null when current) meets the period."""
        if self.kind == "all":
            return "TRUE"
        a, b = sql_time(self.start), sql_time(self.end)  # type: ignore[arg-type]
        if self.kind == "contained_in":
            return f"{start} >= {a} AND {end} IS NOT NULL AND {end} <= {b}"
        upper = "<" if self.kind == "from_to" else "<="
        return f"{start} {upper} {b} AND ({end} IS NULL OR {end} > {a})"
