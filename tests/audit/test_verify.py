"""Plant each kind of tampering in a copy of a lake; verify finds and locates it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.audit import make_checkpoint, make_key, read_key, verify
from tests.conftest import run_esa


def victim(lake: Path) -> Path:
    return sorted((lake / "events" / "category=account").rglob("*.parquet"))[2]


def rewrite(path: Path, change) -> pa.Table:  # type: ignore[no-untyped-def]
    table = pq.read_table(path)
    new = change(table)
    pq.write_table(new, path)
    return table


def row_at(table: pa.Table, i: int) -> dict:  # type: ignore[type-arg]
    return table.slice(i, 1).to_pylist()[0]


def test_untouched_lake_verifies_clean(copy: Path) -> None:
    result = verify(esa.open(copy))
    assert result.ok, str(result)
    assert result.events == result.position == 30_000
    assert result.digest == esa.open(copy).read_all().to_arrow()["hash"][-1].as_py()
    assert verify(esa.open(copy), workers=1).digest == result.digest


@pytest.mark.parametrize("column", ["data", "metadata"])
def test_modified_event_is_located(copy: Path, column: str) -> None:
    path = victim(copy)

    def alter(table: pa.Table) -> pa.Table:
        values = table[column].to_pylist()
        values[7] = values[7].replace('"', "'", 0) + " " if False else values[7][:-1] + ',"x":1}'
        return table.set_column(table.schema.get_field_index(column), column, pa.array(values))

    original = rewrite(path, alter)
    result = verify(esa.open(copy))
    assert not result.ok
    first = result.first
    assert first is not None
    assert (first.kind, first.position, first.stream_id) == (
        "modified",
        row_at(original, 7)["global_position"],
        row_at(original, 7)["stream_id"],
    )
    assert [f.kind for f in result.findings] == ["modified"]


def test_deleted_event_is_located(copy: Path) -> None:
    path = victim(copy)
    original = rewrite(path, lambda t: pa.concat_tables([t.slice(0, 5), t.slice(6)]))
    gone = row_at(original, 5)["global_position"]
    result = verify(esa.open(copy))
    kinds = {f.kind for f in result.findings}
    assert {"file_rows", "deleted", "chain_break"} <= kinds
    deleted = next(f for f in result.findings if f.kind == "deleted")
    assert deleted.position == gone
    assert any(
        f.kind == "version_gap" and f.stream_id == row_at(original, 5)["stream_id"]
        for f in result.findings
    )


def test_inserted_event_is_located(copy: Path) -> None:
    path = victim(copy)
    original = rewrite(path, lambda t: pa.concat_tables([t.slice(0, 9), t.slice(8, 1), t.slice(9)]))
    result = verify(esa.open(copy))
    inserted = next(f for f in result.findings if f.kind == "inserted")
    assert inserted.position == row_at(original, 8)["global_position"]
    assert any(f.kind == "file_rows" for f in result.findings)


def test_moved_event_is_located(copy: Path) -> None:
    path = victim(copy)

    def move(table: pa.Table) -> pa.Table:  # give one event a later position
        positions = table["global_position"].to_pylist()
        positions[4] = positions[4] + 100_000
        return table.set_column(0, "global_position", pa.array(positions, pa.int64()))

    original = rewrite(path, move)
    result = verify(esa.open(copy))
    first = result.findings[0]
    assert first.position == row_at(original, 4)["global_position"]
    assert first.kind == "deleted"
    moved = next(f for f in result.findings if f.kind == "moved")
    assert moved.position == row_at(original, 4)["global_position"] + 100_000
    assert str(row_at(original, 4)["global_position"]) in moved.detail


def test_removed_and_swapped_files_are_named(copy: Path, sample_lake: Path) -> None:
    files = sorted((copy / "events" / "category=account").rglob("*.parquet"))
    files[1].unlink()
    shutil.copy(files[4], files[3])  # swap in another month's file
    result = verify(esa.open(copy))
    kinds = [f.kind for f in result.findings]
    assert kinds[0] in {"missing_file", "file_rows"}
    assert any(f.kind == "missing_file" and f.path == str(files[1]) for f in result.findings)
    assert any(f.kind in {"file_rows", "inserted", "chain_break"} for f in result.findings)


def test_a_file_with_other_columns_is_named(copy: Path) -> None:
    path = victim(copy)
    rewrite(path, lambda t: t.drop(["metadata"]))
    result = verify(esa.open(copy))
    assert result.findings[0].kind == "unreadable_file"
    assert result.findings[0].path == str(path)
    assert any(f.kind == "deleted" for f in result.findings)


def test_truncation_needs_and_is_caught_by_a_checkpoint(sample_lake: Path, tmp_path: Path) -> None:
    key = read_key(make_key(tmp_path / "key"))
    checkpoint = make_checkpoint(esa.open(sample_lake), key)
    assert verify(esa.open(sample_lake), against=checkpoint, key=key).ok
    # The same log without its last ten events: every hash in it is still valid.
    events = esa.open(sample_lake).read_all().to_arrow().slice(0, 30_000 - 10)
    truncated = esa.open(tmp_path / "truncated", create=True)
    truncated.ingest(events.select(["stream_id", "event_id", "event_type", "schema_version", "occurred_at",
                                    "recorded_at", "data", "metadata"]))  # fmt: skip
    alone = verify(truncated)
    assert alone.ok  # from inside, a cut-short log looks whole
    assert alone.digest == events["hash"][-1].as_py()
    result = verify(truncated, against=checkpoint, key=key)
    assert [(f.kind, f.position) for f in result.findings] == [("truncated", 29_991)]
    # A checkpoint whose fields were altered, or checked with another key, fails.
    forged = {**checkpoint, "position": checkpoint["position"] - 1}
    assert [f.kind for f in verify(esa.open(sample_lake), against=forged, key=key).findings] == [
        "checkpoint"
    ]
    other = read_key(make_key(tmp_path / "other"))
    assert [
        f.kind for f in verify(esa.open(sample_lake), against=checkpoint, key=other).findings
    ] == ["checkpoint"]


def test_wholesale_replacement_is_caught_by_the_checkpoint(
    sample_lake: Path, tmp_path: Path
) -> None:
    from esanalytics.sample import SampleSpec, generate

    key = read_key(make_key(tmp_path / "key"))
    checkpoint = make_checkpoint(esa.open(sample_lake), key)
    forged = esa.open(tmp_path / "forged", create=True)  # a rewritten log: every hash valid
    forged.ingest(generate(SampleSpec(events=30_000, seed=8)))
    assert verify(forged).ok
    result = verify(forged, against=checkpoint, key=key)
    assert [f.kind for f in result.findings] == ["checkpoint"]


def test_cli_verify_checkpoint_keygen(copy: Path, tmp_path: Path) -> None:

    key, saved = tmp_path / "key", tmp_path / "checkpoint.json"
    assert run_esa("keygen", str(key)).returncode == 0
    assert (key.stat().st_mode & 0o777) == 0o600
    again = run_esa("keygen", str(key))
    assert again.returncode == 1
    assert "never overwritten" in again.stderr
    assert (
        run_esa("checkpoint", str(copy), "--key", str(key), "--output", str(saved)).returncode == 0
    )
    clean = run_esa("verify", str(copy), "--against", str(saved), "--key", str(key))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("OK: 30,000 events")
    rewrite(
        victim(copy), lambda t: t.set_column(8, "data", pa.array(['{"amount":1}'] * t.num_rows))
    )
    bad = run_esa("verify", str(copy), "--format", "json")
    assert bad.returncode == 1
    report = __import__("json").loads(bad.stdout)
    assert report["ok"] is False
    assert report["findings"][0]["kind"] == "modified"
