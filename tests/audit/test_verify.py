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
    assert result.method == "files"  # every file hashed whole against the linked commit log
    assert result.events == result.position == 30_000
    assert result.digest == esa.open(copy).read_all().to_arrow()["hash"][-1].as_py()
    assert verify(esa.open(copy), workers=1).digest == result.digest
    deep = verify(esa.open(copy), deep=True)
    assert deep.ok, str(deep)
    assert (deep.method, deep.events, deep.digest) == ("events", 30_000, result.digest)
    assert "event by event because --deep asked for it" in str(deep)


def rewrite_commit_log(lake: Path, change) -> None:  # type: ignore[no-untyped-def]
    """Edit the commit lines' JSON as a careful forger would: checksums recomputed."""
    import json

    from esanalytics.store.commitlog import encode_line

    log = lake / "_esa" / "commits.log"
    records = [json.loads(line.rpartition("\t")[0]) for line in log.read_text().splitlines()]
    log.write_bytes(b"".join(encode_line(r) for r in change(records)))
    (lake / "_esa" / "checkpoint.json").unlink()  # the store's own state: rebuilt from the log
    shutil.rmtree(lake / "_esa" / "writer-index", ignore_errors=True)  # the writers' own, too


def test_a_re_encoded_file_with_intact_events_is_named_only_by_its_digest(copy: Path) -> None:
    path = victim(copy)
    pq.write_table(pq.read_table(path), path, compression="gzip")  # same events, other bytes
    result = verify(esa.open(copy))
    assert result.method == "events"  # the quick pass saw the change and stepped down
    assert [(f.kind, f.path) for f in result.findings] == [("rewritten", str(path))]


def test_an_edited_commit_line_breaks_the_link_of_the_next(copy: Path) -> None:
    lines = esa.open(copy).commit_lines()
    victim_n = lines[1].record["n"]

    def edit(records):  # type: ignore[no-untyped-def]
        records[1]["note"] = "checked"  # a harmless-looking change, checksum made good
        return records

    rewrite_commit_log(copy, edit)
    result = verify(esa.open(copy))
    assert result.method == "events"
    assert [f.kind for f in result.findings] == ["commit_log"]
    assert f"commit {victim_n + 1} " in result.findings[0].detail


def test_a_commit_log_digest_edited_to_match_an_altered_file_is_caught(copy: Path) -> None:
    """A forger who alters a file and writes its new digest into the commit log: the events
    themselves still fail their hashes, and the edited line breaks the next one's link."""
    from esanalytics.store import file_digest

    path = victim(copy)
    original = rewrite(
        path, lambda t: t.set_column(8, "data", pa.array(['{"amount":1}'] * t.num_rows))
    )
    relpath = str(path.relative_to(copy / "events"))

    def edit(records):  # type: ignore[no-untyped-def]
        for record in records:
            for raw in record.get("add", ()):
                if raw["path"] == relpath:
                    raw["sha256"] = file_digest(path)
        return records

    rewrite_commit_log(copy, edit)
    result = verify(esa.open(copy))
    assert result.method == "events"
    assert result.first is not None
    assert (result.first.kind, result.first.position) == (
        "modified",
        min(original["global_position"].to_pylist()),
    )
    assert result.findings[-1].kind == "commit_log"


def test_lakes_written_before_digests_verify_event_by_event(copy: Path) -> None:
    """Commit lines without links and files without digests (the earlier format): verify
    recomputes every hash, and appends and compaction still work and seal what they write."""

    def strip(records):  # type: ignore[no-untyped-def]
        for record in records:
            record.pop("prev", None)
            for raw in record.get("add", ()):
                raw.pop("sha256", None)
        return records

    rewrite_commit_log(copy, strip)
    store = esa.open(copy)
    result = verify(store)
    assert (result.ok, result.method, result.events) == (True, "events", 30_000)
    assert result.why == "the commit log was written before its lines were linked"
    store.ingest(
        store.read_all(from_position=0, position=2_000)
        .to_arrow()
        .select(["stream_id", "event_type", "occurred_at", "data", "metadata"])
        .set_column(0, "stream_id", pa.array([f"account-new{i}" for i in range(2_000)]))
    )
    store.compact()
    after = verify(esa.open(copy))
    assert (after.ok, after.method, after.events) == (True, "events", 32_000), str(after)
    assert all(e.sha256 for e in esa.open(copy).files() if e.max_position > 30_000)


def test_appends_from_many_handles_keep_the_commit_lines_linked(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    first = esa.open(lake, create=True)
    second = esa.open(lake)
    for i in range(6):
        handle = first if i % 2 else second
        handle.append(f"account-{i}", [esa.NewEvent("AccountOpened", {"owner": str(i)})])
    log = lake / "_esa" / "commits.log"
    with open(log, "ab") as torn:  # a writer killed in the middle of its line
        torn.write(b'{"n":99,"kind":"append","fir')
    esa.open(lake).append("account-9", [esa.NewEvent("AccountOpened", {})])
    esa.open(lake).flush()
    lines = esa.open(lake).commit_lines()
    assert [ln.prev for ln in lines[1:]] == [ln.digest for ln in lines[:-1]]
    result = verify(esa.open(lake))
    assert (result.ok, result.method, result.events) == (True, "files", 7), str(result)


def test_compaction_refuses_to_seal_an_altered_file(tmp_path: Path) -> None:
    from esanalytics.sample import SampleSpec, generate

    lake = tmp_path / "lake"
    store = esa.open(lake, create=True)
    events = generate(SampleSpec(events=4_000, seed=3))
    store.ingest(events.slice(0, 2_000))
    store.ingest(events.slice(2_000))
    path = victim(lake)
    rewrite(path, lambda t: t.set_column(8, "data", pa.array(['{"amount":1}'] * t.num_rows)))
    before = {p: p.read_bytes() for p in (lake / "events").rglob("*.parquet")}
    log = (lake / "_esa" / "commits.log").read_bytes()
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(lake).compact()
    assert "no longer holds what was committed" in str(caught.value)
    assert "Hint: run `esa verify" in str(caught.value)
    assert (lake / "_esa" / "commits.log").read_bytes() == log
    assert {p: p.read_bytes() for p in (lake / "events").rglob("*.parquet")} == before


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


def test_a_checkpoint_vouches_for_files_until_compaction_rewrites_them(
    copy: Path, tmp_path: Path
) -> None:
    key = read_key(make_key(tmp_path / "key"))
    checkpoint = make_checkpoint(esa.open(copy), key)
    assert {"commit", "log_digest"} <= checkpoint.keys()
    fast = verify(esa.open(copy), against=checkpoint, key=key)
    assert (fast.ok, fast.method) == (True, "files"), str(fast)
    store = esa.open(copy)  # new events recorded in the month of the checkpointed last ones
    last = store.read_all(from_position=29_000).to_arrow()
    late = pa.array([last["recorded_at"][-1].as_py()] * last.num_rows, last["recorded_at"].type)
    store.ingest(last.select(["stream_id", "event_type", "data", "metadata"])
                 .set_column(0, "stream_id", pa.array([f"order-x{i}" for i in range(last.num_rows)]))
                 .append_column("recorded_at", late))  # fmt: skip
    assert store.compact()["partitions"] >= 1
    slow = verify(esa.open(copy), against=checkpoint, key=key)
    assert (slow.ok, slow.method, slow.events) == (True, "events", 31_000), str(slow)
    assert "export a new checkpoint after compacting" in str(slow)
    again = make_checkpoint(esa.open(copy), key)
    assert verify(esa.open(copy), against=again, key=key).method == "files"
    # The signed commit line itself cannot be edited, even by a forger who relinks the rest.

    def edit(records):  # type: ignore[no-untyped-def]
        import hashlib
        import json

        signed = next(r for r in records if r["n"] == again["commit"])
        signed["note"] = "checked"
        previous = "0" * 64
        for record in records:
            record["prev"] = previous
            previous = hashlib.sha256(
                json.dumps(record, separators=(",", ":")).encode()
            ).hexdigest()
        return records

    rewrite_commit_log(copy, edit)
    assert verify(esa.open(copy)).ok  # from inside, a relinked log looks whole
    forged = verify(esa.open(copy), against=again, key=key)
    assert [f.kind for f in forged.findings] == ["checkpoint"]
    assert "the commit log was rewritten" in forged.findings[0].detail


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
    assert "every file matches its committed SHA-256" in " ".join(clean.stdout.split())
    deep = run_esa("verify", str(copy), "--deep", "--format", "json")
    assert deep.returncode == 0, deep.stdout + deep.stderr
    assert __import__("json").loads(deep.stdout)["method"] == "events"
    rewrite(
        victim(copy), lambda t: t.set_column(8, "data", pa.array(['{"amount":1}'] * t.num_rows))
    )
    bad = run_esa("verify", str(copy), "--format", "json")
    assert bad.returncode == 1
    report = __import__("json").loads(bad.stdout)
    assert report["ok"] is False
    assert report["findings"][0]["kind"] == "modified"
