"""verify reads a file run by run of its row groups (``READ_ROWS`` at a time), so that the
files of a 100M-event lake (2.5M events each) are checked in bounded memory: the facts it
merges from the runs must be those of the whole file, and what it finds must not depend on
where a run ends. Each check is made with runs far smaller than the files here (several row
groups of 1,024 rows to a file, a few to a run) against an independent computation."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.audit import verify
from esanalytics.store.commitlog import replay

verifier = sys.modules[verify.__module__]  # (the module, not the function)
SMALL = 1_000  # a row group of 1,024 rows to a run (the files here have two or three)


def committed(lake: Path) -> list[tuple[Path, str, str]]:
    """The lake's committed files: path, category and SHA-256, from its commit log."""
    store = esa.open(lake)
    files = replay([line.record for line in store.commit_lines()]).files
    return [(lake / "events" / rel, raw["category"], raw["sha256"]) for rel, raw in files.items()]


def version_facts(frame: pd.DataFrame) -> pd.DataFrame:
    """Per-stream version facts (count, min, max, sum, sum of squares) of rows with
    ``stream_id`` and ``version`` columns, by pandas, indexed by stream in order."""
    frame = frame.assign(squares=frame["version"] ** 2)
    grouped = frame.groupby("stream_id").agg(
        version_count=("version", "count"),
        version_min=("version", "min"),
        version_max=("version", "max"),
        version_sum=("version", "sum"),
        squares_sum=("squares", "sum"),
    )
    return grouped.sort_index()


def independent_facts(path: Path) -> pd.DataFrame:
    """Per-stream version facts of a file by pandas, from the whole file."""
    return version_facts(pq.read_table(path, columns=["stream_id", "version"]).to_pandas())


@pytest.mark.parametrize("read_rows", [SMALL, 2_100])  # (2,100: two row groups to a run)
def test_a_files_facts_merged_from_runs_are_the_whole_files(
    copy: Path, monkeypatch: pytest.MonkeyPatch, read_rows: int
) -> None:
    monkeypatch.setattr(verifier, "READ_ROWS", read_rows)
    files = committed(copy)
    runs_seen = 0
    for path, category, sha256 in files:
        metadata = pq.ParquetFile(path).metadata
        runs = verifier._row_group_runs(metadata)
        runs_seen = max(runs_seen, len(runs))
        assert [i for run in runs for i in run] == list(range(metadata.num_row_groups))
        assert all(
            sum(metadata.row_group(i).num_rows for i in run) <= read_rows or len(run) == 1
            for run in runs
        )
        facts = verifier._file_facts((str(path), category, sha256, None))
        whole = pq.read_table(path)
        assert facts.bad == []
        assert facts.digest_ok is True
        np.testing.assert_array_equal(facts.positions, whole["global_position"].to_numpy())
        for got, column in ((facts.hash8, "hash"), (facts.prev8, "prev_hash")):
            expected = [int(h[:16], 16) for h in whole[column].to_pylist()]
            assert got.tolist() == expected
        assert all(column.num_chunks <= 1 for column in facts.versions.columns)
        ours = facts.versions.to_pandas().set_index("stream_id").sort_index()
        theirs = independent_facts(path)
        pd.testing.assert_frame_equal(ours[theirs.columns], theirs, check_dtype=False)
    assert runs_seen >= 2  # (the lake's files are read in several runs: the test means it)


def rewrite_keeping_groups(path: Path, table: pa.Table) -> None:
    pq.write_table(table, path, row_group_size=1_024)


@pytest.mark.parametrize("where", ["first run", "a later run", "the last row"])
def test_an_event_altered_in_any_run_is_located(
    copy: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.setattr(verifier, "READ_ROWS", SMALL)
    path = max(committed(copy), key=lambda f: pq.ParquetFile(f[0]).metadata.num_rows)[0]
    table = pq.read_table(path)
    assert pq.ParquetFile(path).metadata.num_row_groups >= 3
    row = {"first run": 5, "a later run": 1_024 + 700, "the last row": table.num_rows - 1}[where]
    position = table["global_position"][row].as_py()
    reasons = table["event_type"].to_pylist()
    reasons[row] = reasons[row] + "Forged"
    altered = table.set_column(
        table.schema.get_field_index("event_type"), "event_type", pa.array(reasons)
    )
    rewrite_keeping_groups(path, altered)
    assert pq.ParquetFile(path).metadata.num_row_groups >= 3
    for workers in (1, 2):
        result = verify(esa.open(copy), deep=True, workers=workers)
        assert not result.ok
        modified = [(f.kind, f.position) for f in result.findings if f.kind == "modified"]
        assert modified == [("modified", position)], str(result)


def test_a_stream_whose_versions_break_across_runs_is_named(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version repeated in a later run than the stream's others: only the merged sums see
    it (each run alone holds a run of versions that could be right)."""
    monkeypatch.setattr(verifier, "READ_ROWS", SMALL)
    path = max(committed(copy), key=lambda f: pq.ParquetFile(f[0]).metadata.num_rows)[0]
    table = pq.read_table(path)
    frame = table.select(["stream_id", "version"]).to_pandas()
    frame["run"] = np.arange(len(frame)) // 1_024
    spread = frame.groupby("stream_id")["run"].nunique()
    stream = spread[spread > 1].index[0]  # a stream with events in two runs
    rows = frame.index[frame["stream_id"] == stream].tolist()
    last = rows[-1]
    versions = table["version"].to_pylist()
    versions[last] = versions[rows[0]]  # the stream's last event repeats its first version
    rewrite_keeping_groups(
        path,
        table.set_column(
            table.schema.get_field_index("version"), "version", pa.array(versions, pa.int64())
        ),
    )
    result = verify(esa.open(copy), deep=True, workers=1)
    assert not result.ok
    assert ("version_gap", stream) in {(f.kind, f.stream_id) for f in result.findings}, str(result)


def test_verify_answers_the_same_whatever_the_runs(
    copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An untouched lake: deep verify with small runs agrees with the quick pass."""
    quick = verify(esa.open(copy))
    monkeypatch.setattr(verifier, "READ_ROWS", SMALL)
    deep = verify(esa.open(copy), deep=True)
    assert quick.ok, str(quick)
    assert deep.ok, str(deep)
    assert (deep.events, deep.position, deep.digest) == (quick.events, quick.position, quick.digest)


@pytest.mark.parametrize("parts", [1, 3])
def test_version_sums_cross_to_the_lead_at_their_own_size(parts: int) -> None:
    """Over 32,768 streams pyarrow's group_by returns several chunks sliced from one buffer,
    and a pickled slice carries its whole buffer: the sums a worker sends must be one
    buffer a column, so what crosses is about their size, and they add up the same."""
    streams = 100_000
    tables = []
    for part in range(parts):
        frame = pd.DataFrame(
            {
                "stream_id": [f"account-{i}" for i in range(streams)],
                "version": pd.Series([part + 1] * streams, dtype="int64"),
            }
        )
        grouped = pa.Table.from_pandas(frame, preserve_index=False).group_by("stream_id")
        names = ("count", "min", "max", "sum")
        table = grouped.aggregate([("version", how) for how in names])
        table = table.append_column("squares_sum", pa.array([(part + 1) ** 2] * streams))
        tables.append(table)
    assert max(column.num_chunks for column in tables[0].columns) > 1  # (the test means it)
    merged = verifier._merged_versions(tables)
    assert all(column.num_chunks == 1 for column in merged.columns)
    assert len(pickle.dumps(merged)) < 1.2 * merged.nbytes + 4_096
    sums = merged.to_pandas().set_index("stream_id").sort_index()
    assert (sums["version_count"] == parts).all()
    assert (sums["version_sum"] == parts * (parts + 1) // 2).all()
    assert (sums["version_max"] == parts).all()
    assert len(sums) == streams
