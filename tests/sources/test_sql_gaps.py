"""The gap rule of SQL sources (esanalytics/sources/sql.py), one read at a time: the gaps a
read leaves, how a late row fills its gap, and when a gap is forgotten."""

from __future__ import annotations

import numpy as np
import pytest

from esanalytics.sources import sql
from esanalytics.sources.sql import _next_gaps


def gaps(*args: object, **kwargs: object) -> list[list[float]]:
    return _next_gaps(*args, **kwargs)  # type: ignore[arg-type]


def test_missing_positions_become_gaps_seen_now() -> None:
    read = np.array([1, 2, 5, 6, 9])
    assert gaps([], read, 0, 100.0, full=False) == [[3, 4, 100.0], [7, 8, 100.0]]
    # after a cursor at 10: a first row at 12 leaves 11
    assert gaps([], np.array([12]), 10, 5.0, full=False) == [[11, 11, 5.0]]


def test_a_late_row_fills_its_place_and_splits_its_range() -> None:
    before = [[3, 7, 100.0]]
    assert gaps(before, np.array([5, 12]), 10, 110.0, full=False) == [
        [3, 4, 100.0], [6, 7, 100.0], [11, 11, 110.0],
    ]  # fmt: skip
    assert gaps([[3, 3, 100.0]], np.array([3]), 10, 110.0, full=False) == []


def test_a_gap_is_kept_within_the_bound_and_forgotten_after_it() -> None:
    within = 100.0 + sql.GAP_SECONDS - 1
    after = 100.0 + sql.GAP_SECONDS + 1
    assert gaps([[3, 4, 100.0]], np.array([11]), 10, within, full=False) == [[3, 4, 100.0]]
    assert gaps([[3, 4, 100.0]], np.array([11]), 10, after, full=False) == []


def test_a_full_batch_forgets_only_the_gaps_it_covered() -> None:
    # cursor at 30; a full batch of one row (21) looked at positions up to 21 only: the old
    # gaps 3-4 and 20 were looked at and are forgotten, 22 was not and stays
    kept = gaps([[3, 4, 0.0], [20, 22, 0.0]], np.array([21]), 30, 1000.0, full=True)
    assert kept == [[22, 22, 0.0]]


def test_only_the_highest_gaps_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql, "MAX_GAPS", 3)
    read = np.arange(2, 20, 2)  # 2, 4, ... 18: gaps at 1, 3, ... 17
    assert [g[0] for g in gaps([], read, 0, 0.0, full=False)] == [13, 15, 17]
