"""Verify covers typed twins: an altered, missing or unnamed twin is a finding that says so
(an altered one with the first row whose typed values differ), and intact twins stay clean."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.audit import verify
from esanalytics.audit.verify import VerifyResult
from esanalytics.store.commitlog import FileEntry, file_digest
from tests.audit.test_verify import rewrite_commit_log
from tests.store.test_typed_twins import _orders


def _twin(lake: Path, index: int = 2) -> tuple[esa.EventStore, FileEntry, Path]:
    store = esa.open(lake)
    entry = sorted(store.files(), key=lambda e: e.path)[index]
    path = store.twin_path(entry)
    assert path is not None
    return store, entry, Path(path)


def _swap_one_value(path: Path, row: int) -> str:
    """Rewrite the twin with row ``row`` of its first field column swapped with a later row
    of another value (so ``row`` is the first that differs); returns the column's name."""
    table = pq.read_table(path)
    name = next(n for n in table.column_names if n.startswith("data."))
    values = table[name].to_pylist()
    other = next(i for i in range(row + 1, len(values)) if values[i] != values[row])
    order = list(range(table.num_rows))
    order[row], order[other] = other, row
    column = table[name].take(pa.array(order))
    pq.write_table(table.set_column(table.column_names.index(name), name, column), path)
    return name


def _twin_findings(result: VerifyResult) -> list[str]:
    return [f.detail for f in result.findings if f.kind == "twin"]


def test_intact_twins_verify_clean(copy: Path) -> None:
    store = esa.open(copy)
    assert all(entry.typed is not None for entry in store.files())  # compacted: all twinned
    quick, deep = verify(store), verify(store, deep=True)
    assert quick.ok, str(quick)
    assert quick.method == "files"
    assert deep.ok, str(deep)


def test_an_altered_twin_is_named_with_the_first_row_that_differs(copy: Path) -> None:
    _, entry, path = _twin(copy)
    column = _swap_one_value(path, 5)
    position = pq.read_table(copy / "events" / entry.path)["global_position"][5].as_py()
    for result in (verify(esa.open(copy)), verify(esa.open(copy), deep=True)):
        assert not result.ok
        assert [(f.kind, f.path) for f in result.findings] == [("twin", str(path))]
        (detail,) = _twin_findings(result)
        assert "SHA-256" in detail
        assert f"row 5 (position {position})" in detail
        assert f"column {column}" in detail
        assert "events file is not affected" in detail
    assert "twin" in str(verify(esa.open(copy)))


def test_a_missing_twin_and_an_unnamed_one_are_findings(copy: Path) -> None:
    _, entry, path = _twin(copy)
    stray = copy / "typed" / "category=account" / "month=2024-01" / "extra.parquet"
    shutil.copy(path, stray)
    path.unlink()
    result = verify(esa.open(copy))
    assert not result.ok
    details = _twin_findings(result)
    assert len(details) == 2
    assert any(f"twin of {entry.path}" in d and "is missing" in d for d in details)
    assert any("no commit names" in d and "extra.parquet" in d for d in details)
    assert [f.kind for f in result.findings] == ["twin", "twin"]  # the events are intact


def test_a_twin_of_the_newest_line_forged_with_its_digest_is_found(copy: Path) -> None:
    """No later line links to the newest one: a twin altered together with the digest that
    line records is found by deriving the twin again."""
    store = esa.open(copy)
    newest = store.commit_lines()[-1].record
    raw = newest["add"][0]
    path = copy / "typed" / raw["path"]
    _swap_one_value(path, 0)

    def forge(records):  # type: ignore[no-untyped-def]
        twin = records[-1]["add"][0]["typed"]
        twin["sha256"], twin["bytes"] = file_digest(path), path.stat().st_size
        return records

    rewrite_commit_log(copy, forge)
    result = verify(esa.open(copy))
    assert [f.kind for f in result.findings] == ["twin"], str(result)
    assert "is not derived from its events file: row 0 " in result.findings[0].detail
    assert raw["path"] in result.findings[0].detail


def test_a_lost_events_file_of_the_newest_line_is_reported_not_raised(copy: Path) -> None:
    """Its twin cannot be derived again: verify says so beside the missing file, and never
    takes the loss for a vacuum to start over from (it would raise after three tries)."""
    raw = esa.open(copy).commit_lines()[-1].record["add"][0]
    (copy / "events" / raw["path"]).unlink()
    result = verify(esa.open(copy))
    assert not result.ok
    assert "missing_file" in [f.kind for f in result.findings]
    assert any("events file or the twin is missing" in d for d in _twin_findings(result))


def test_the_newest_lines_twin_fields_edited_are_found(copy: Path) -> None:
    """The fields map (and ``more``) of the newest line tell readers how the twin stores each
    field: edited with the checksum recomputed (no later line links to it), a query would
    read the field as another type, or as absent. Verify finds each."""
    newest = esa.open(copy).commit_lines()[-1].record["add"][0]
    name = sorted(newest["typed"]["fields"])[0]

    def retype(twin):  # type: ignore[no-untyped-def]
        twin["fields"][name] = "BOOLEAN" if twin["fields"][name] != "BOOLEAN" else "BIGINT"

    def drop(twin):  # type: ignore[no-untyped-def]
        del twin["fields"][name]

    def more(twin):  # type: ignore[no-untyped-def]
        twin["more"] = True

    for edit in (retype, drop, more):
        lake = copy.parent / edit.__name__
        shutil.copytree(copy, lake)

        def forge(records, edit=edit):  # type: ignore[no-untyped-def]
            edit(records[-1]["add"][0]["typed"])
            return records

        rewrite_commit_log(lake, forge)
        result = verify(esa.open(lake))
        assert [f.kind for f in result.findings] == ["twin"], (edit.__name__, str(result))
        assert newest["path"] in result.findings[0].detail


def test_a_retired_twin_or_file_put_back_is_found(lake: Path) -> None:
    """A file (or twin) that a compaction removed is excused at its published name only
    while the removing line is the newest (a crash before retiring it: the next writer
    retires it before it commits). Put back under a later line, plain readers of ``typed/``
    (or ``events/``) read its rows twice, and writers refuse the lake: verify says so."""
    store = esa.open(lake, create=True)
    store.ingest(_orders(10_000))  # a file with a twin
    store.compact()
    removed = store.commit_lines()[-1].record["remove"][0]
    store.append("account-x", [esa.NewEvent("AccountOpened", {"owner": "Ada"})])
    for root, kind in (("typed", "twin"), ("events", "unnamed_file")):
        folder, name = (lake / root / removed).parent, Path(removed).name
        (folder / f".{name}.retired").rename(folder / name)
        result = verify(esa.open(lake))
        assert kind in [f.kind for f in result.findings], (root, str(result))
        assert any(Path(removed).name in f.detail for f in result.findings), str(result)
        with pytest.raises(esa.CorruptLakeError):  # what the writers say, and verify agrees
            esa.open(lake).append("account-x", [esa.NewEvent("AccountClosed", {})])


def test_a_live_twin_hidden_under_its_retired_name_is_found(copy: Path) -> None:
    """esanalytics' readers find a twin under its retired name too; plain readers of
    ``typed/`` miss its rows. As for an events file, verify says so."""
    _, entry, path = _twin(copy)
    path.rename(path.with_name(f".{path.name}.retired"))
    result = verify(esa.open(copy))
    assert [f.kind for f in result.findings] == ["twin"], str(result)
    assert f"twin of {entry.path}" in result.findings[0].detail
    assert "retired name" in result.findings[0].detail
