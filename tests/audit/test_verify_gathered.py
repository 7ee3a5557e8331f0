"""The lead of verify's every-event pass gathers each file's facts as they arrive (links into
one set of arrays, version sums into one running table) instead of keeping every file's
facts: at 100M events that is the difference between 3 and 18 GB. What it gathers must be
what the files hold, whatever order the files come in, however many rows they hold against
what was committed, and whether the positions are a clean 1..n or were tampered with.
Checked against a plain Python sort and pandas."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esanalytics.audit import verify
from tests.audit.test_verify_runs import version_facts

verifier = sys.modules[verify.__module__]  # (the module, not the function)


#: The columns of a worker's version facts, as the ones pyarrow's group_by gives.
VERSION_FACTS = pa.schema(
    [("stream_id", pa.string())]
    + [
        (name, pa.int64())
        for name in ("version_count", "version_min", "version_max", "version_sum", "squares_sum")
    ]
)


def file_facts(rows: list[tuple[int, int, int, str, int]]) -> object:
    """The facts a worker sends for a file of (position, prev8, hash8, stream, version)."""
    frame = pd.DataFrame(
        {
            "stream_id": [r[3] for r in rows],
            "version": pd.Series([r[4] for r in rows], dtype="int64"),
        }
    )
    versions = pa.Table.from_pandas(
        version_facts(frame).reset_index(), schema=VERSION_FACTS, preserve_index=False
    )
    return verifier._FileFacts(
        [],
        np.array([r[0] for r in rows], np.int64),
        np.array([r[1] for r in rows], np.uint64),
        np.array([r[2] for r in rows], np.uint64),
        versions,
        digest_ok=bool(len(rows) % 2),
    )


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[list[tuple[int, int, int, str, int]]], int]:
    """Files of rows, and how many rows their commit lines claim. The positions are 1..n
    shuffled, or tampered (one repeated, one missing, the first dropped, ...)."""
    n = draw(st.integers(0, 60))
    positions = list(range(1, n + 1))
    tamper = draw(st.sampled_from(["none", "repeat", "drop", "drop first", "beyond", "swap"]))
    if n and tamper == "repeat":
        positions.append(draw(st.sampled_from(positions)))
    elif n and tamper == "drop":
        positions.remove(draw(st.sampled_from(positions)))
    elif n and tamper == "drop first":
        positions.remove(1)
    elif n and tamper == "beyond":
        positions[-1] = n + draw(st.integers(1, 5))
    elif n > 1 and tamper == "swap":  # a clean 1..n still: the rows only change files
        positions[0], positions[-1] = positions[-1], positions[0]
    order = draw(st.permutations(range(len(positions))))
    rows = [
        (
            positions[i],
            draw(st.integers(0, 2**64 - 1)),
            draw(st.integers(0, 2**64 - 1)),
            draw(st.sampled_from(["a-1", "a-2", "order-7"])),
            draw(st.integers(1, 9)),
        )
        for i in order
    ]
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=6)))
    files = [rows[a:b] for a, b in zip([0, *cuts], [*cuts, len(rows)], strict=True)]
    claimed = draw(st.integers(0, len(rows) + 3))  # (fewer rows claimed: the arrays grow)
    return files, claimed


@settings(max_examples=300, deadline=None)
@given(logs(), st.integers(1, 40))
def test_what_the_lead_gathers_is_what_the_files_hold(
    log: tuple[list[list[tuple[int, int, int, str, int]]], int], fold_rows: int
) -> None:
    files, claimed = log
    gathered = verifier._Gathered(claimed)
    gathered.FOLD_ROWS = fold_rows  # (folds the running version table often)
    for rows in files:
        gathered.add(file_facts(rows))
    positions, prev8, hash8, runs_through = gathered.in_order()

    rows = [row for f in files for row in f]
    expected = sorted(rows, key=lambda row: row[0])  # (stable: repeats keep file order)
    assert positions.tolist() == [r[0] for r in expected]
    assert prev8.tolist() == [r[1] for r in expected]
    assert hash8.tolist() == [r[2] for r in expected]
    assert runs_through == ([r[0] for r in expected] == list(range(1, len(rows) + 1)))
    assert gathered.digests_ok == [bool(len(f) % 2) for f in files]

    versions = gathered.versions()
    if not rows:  # (no files at all, or only empty ones)
        assert versions is None or versions.num_rows == 0
        return
    assert versions is not None
    frame = pd.DataFrame(rows, columns=["position", "prev8", "hash8", "stream_id", "version"])
    by_pandas = version_facts(frame)
    got = versions.to_pandas().set_index("stream_id").sort_index()
    pd.testing.assert_frame_equal(got, by_pandas.sort_index(), check_dtype=False)


def test_a_clean_log_is_put_in_order_without_a_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    """The positions of a clean log are placed, not sorted (a sort of 100M positions is
    seconds and a second copy of every array): argsort must not be called."""
    rng = np.random.default_rng(7)
    n = 10_000
    positions = rng.permutation(n) + 1
    gathered = verifier._Gathered(n)
    for chunk in np.array_split(positions, 7):
        gathered.add(
            verifier._FileFacts(
                [],
                chunk.astype(np.int64),
                (chunk * 3).astype(np.uint64),
                (chunk * 5).astype(np.uint64),
                pa.table({"stream_id": ["s"], "version_count": [len(chunk)]}),
            )
        )
    called = []
    real = np.argsort

    def counting(*args: object, **kwargs: object) -> object:
        called.append(1)
        return real(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(verifier.np, "argsort", counting)
    got, prev8, hash8, runs_through = gathered.in_order()
    assert runs_through
    assert not called
    assert got.tolist() == list(range(1, n + 1))
    assert prev8.tolist() == [3 * p for p in range(1, n + 1)]
    assert hash8.tolist() == [5 * p for p in range(1, n + 1)]
