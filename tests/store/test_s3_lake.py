"""Lakes on object storage, end to end against moto's S3 server on 127.0.0.1: the store, the
same projections as a local lake, the CLI, verify, a writer killed mid-commit, writers in
several processes racing for positions, and tampering found."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import esanalytics as esa
from esanalytics.audit import verify
from esanalytics.catalog import account_balances, order_status
from esanalytics.engine import Session
from esanalytics.store.objectlog import line_name
from esanalytics.store.s3 import S3FS, copy_lake


@pytest.fixture
def url(s3_bucket: str) -> str:
    return f"s3://{s3_bucket}/lakes/bank"


@pytest.fixture(scope="module")
def sample_on_s3(s3server: Any, sample_lake: Path) -> str:
    """The sample lake copied to S3 once (read-only for tests)."""
    url = f"s3://{s3server.bucket()}/sample"
    copy_lake(sample_lake, S3FS(url, s3server.options()))
    return url


def _events(n: int, start: int = 0) -> list[esa.NewEvent]:
    return [esa.NewEvent("MoneyDeposited", {"amount": start + i}) for i in range(n)]


def test_a_lake_on_s3_writes_and_reads_as_a_local_one(url: str, s3server: Any) -> None:
    opts = s3server.options()
    with pytest.raises(esa.LakeNotFoundError):
        esa.open(url, storage_options=opts)
    store = esa.open(url, create=True, storage_options=opts)
    assert store.path == url
    store.append("account-1", [esa.NewEvent("AccountOpened", {"owner": "Ada"})])
    store.append("account-1", _events(3), expected_version=1)
    with pytest.raises(esa.ConcurrencyError):
        store.append("account-1", _events(1), expected_version=1)
    big = pa.table(
        {
            "stream_id": [f"account-{2 + i % 7}" for i in range(12_000)],
            "event_type": ["MoneyDeposited"] * 12_000,
            "data": [json.dumps({"amount": i}) for i in range(12_000)],
            "metadata": ["{}"] * 12_000,
        }
    )
    store.ingest(big)  # large enough for a typed twin
    store.flush()
    other = esa.open(url, storage_options=opts)  # another handle, as another process sees it
    assert other.head == 12_004
    assert [e.version for e in other.load("account-1")] == [1, 2, 3, 4]
    pinned = Session(store)  # a reader of the files before compaction
    before = {f"events/{e.path}" for e in store.files()}
    assert other.compact()["rows"] == 12_004
    assert store.head == 12_004
    # the replaced files stay, under their names, for readers pinned before (no rename)
    assert pinned.sql("SELECT count(*) FROM events").fetchall() == [(12_004,)]
    assert before <= set(S3FS(url, opts).list_files("events"))
    assert other.vacuum(older_than=timedelta(hours=1)) == 0
    assert other.vacuum(older_than=timedelta(0)) == len(before)
    assert set(S3FS(url, opts).list_files("events")) == {f"events/{e.path}" for e in store.files()}
    session = Session(store)
    got = session.sql("SELECT count(*), sum((data->>'amount')::BIGINT) FROM events").fetchall()
    assert got == [(12_004, 3 + sum(range(12_000)))]
    result = verify(store)
    assert result.ok, result
    assert result.events == 12_004
    # nothing but objects with final names: no temporary names, no renamed files, no locks
    keys = S3FS(url, opts).list_files("")
    assert not [k for k in keys if k.endswith(".tmp") or ".retired" in k or k.endswith(".lock")]


def test_the_same_projections_on_a_local_lake_and_its_s3_copy(
    sample_lake: Path, sample_on_s3: str, s3server: Any
) -> None:
    local = Session(esa.open(sample_lake))
    remote = Session(esa.open(sample_on_s3, storage_options=s3server.options()))
    assert remote.position == local.position == 30_000
    checked = verify(remote.store)  # each file against its digest: the copy is whole
    assert checked.ok
    assert checked.method == "files"
    first, last = local.sql("SELECT min(recorded_at), max(recorded_at) FROM events").fetchall()[0]
    for cut in (
        {},
        {"as_of": first + (last - first) / 3},
        {"valid_at": first + (last - first) / 2},
    ):
        for projection in (account_balances, order_status):
            mine = projection.state(local, **cut).order("ALL").fetchall()
            theirs = projection.state(remote, **cut).order("ALL").fetchall()
            assert mine == theirs
            assert mine
    # what one entity went through, and a question asked with SQL
    assert local.sql(
        "SELECT * FROM events WHERE stream_id = 'account-17' ORDER BY 1"
    ).fetchall() == (
        remote.sql("SELECT * FROM events WHERE stream_id = 'account-17' ORDER BY 1").fetchall()
    )


def _scan(session: Session, sql: str) -> dict[str, int]:
    session.con.execute("PRAGMA enable_profiling = 'json'")
    try:
        plan = json.loads(session.con.execute(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1])
    finally:
        session.con.execute("PRAGMA disable_profiling")

    def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
        found = (
            [node]
            if node.get("name") in ("READ_PARQUET", "TABLE_SCAN")
            and "Total Files Read" in node.get("extra_info", {})
            else []
        )
        for child in node.get("children", ()):
            found += scans(child)
        return found

    found = [s for op in plan["operator"] for s in scans(op)]
    return {
        "files": sum(int(s["extra_info"]["Total Files Read"]) for s in found),
        "groups": sum(int(s.get("row_groups_scanned", 0)) for s in found),
    }


def test_partition_and_row_group_pruning_hold_on_s3(
    sample_lake: Path, sample_on_s3: str, s3server: Any
) -> None:
    """An as-of cut bounds the month partitions, a category the category partitions, and a
    stream's position range the row groups: DuckDB reads as few files and row groups from
    S3 as from disk."""
    local = Session(esa.open(sample_lake))
    remote = Session(esa.open(sample_on_s3, storage_options=s3server.options()))
    first = local.sql("SELECT min(recorded_at) FROM events").fetchall()[0][0]
    cut = Session(esa.open(sample_lake), as_of=first + timedelta(days=20))
    cut_remote = Session(
        esa.open(sample_on_s3, storage_options=s3server.options()), as_of=first + timedelta(days=20)
    )
    sql = "SELECT count(*) FROM events WHERE category = 'account' AND global_position < 500"
    everything = _scan(local, "SELECT count(*) FROM events")
    for mine, theirs in ((local, remote), (cut, cut_remote)):
        assert mine.sql(sql).fetchall() == theirs.sql(sql).fetchall()
        disk, s3 = _scan(mine, sql), _scan(theirs, sql)
        assert disk == s3
        assert s3["files"] < everything["files"]


def test_the_cli_takes_s3_lakes_from_the_environment(sample_on_s3: str, s3server: Any) -> None:
    env = s3server.environ()
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "esanalytics.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    done = run("sql", sample_on_s3, "SELECT count(*) AS n FROM events", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert "30000" in done.stdout
    done = run("verify", sample_on_s3)
    assert done.returncode == 0, done.stdout + done.stderr
    done = run("state", sample_on_s3, "account_balances", "--key", "account-17", "--format", "csv")
    assert done.returncode == 0, done.stderr
    assert "account-17" in done.stdout
    done = run("sql", sample_on_s3, f"COPY (SELECT 1) TO '{sample_on_s3}/events/x.parquet'")
    assert done.returncode != 0
    assert "writes inside the lake" in done.stderr
    done = run("generate", "s3://bucket/new", "--events", "10")
    assert done.returncode != 0
    assert "Hint:" in done.stderr


def test_what_is_kept_only_locally_says_so(url: str, s3server: Any) -> None:
    from esanalytics.materialized import MaterializedProjection

    store = esa.open(url, create=True, storage_options=s3server.options())
    with pytest.raises(
        esa.ValidationError, match=r"Materialized projections are kept only(.|\n)*Hint:"
    ):
        MaterializedProjection(store, account_balances)


def test_the_spark_engine_refuses_a_lake_on_s3_with_a_hint(url: str, s3server: Any) -> None:
    # Spark would need Hadoop's s3a connector: refused before any JVM starts.
    from esanalytics import spark

    store = esa.open(url, create=True, storage_options=s3server.options())
    with pytest.raises(spark.SparkUnavailableError, match=r"object storage(.|\n)*Hint: .*s3a"):
        spark.Session(store)


def test_an_import_into_an_s3_lake_equals_one_into_a_folder(
    url: str, s3server: Any, tmp_path: Path
) -> None:
    """The same JSONL file imported into a folder and into S3: the same events, and a second
    run adds nothing to either (the cursor is a commit like any other)."""
    from tests.sources.test_file_sources import sample_rows, write_jsonl

    source = tmp_path / "export.jsonl"
    write_jsonl(source, sample_rows(300))
    remote = esa.open(url, create=True, storage_options=s3server.options())
    local = esa.open(tmp_path / "lake", create=True)
    for store in (remote, local):
        assert esa.import_events(store, source, name="export").events == 300
        assert esa.import_events(store, source, name="export").events == 0
    columns = ["global_position", "stream_id", "version", "event_type", "data", "occurred_at"]
    assert (
        remote.read_all().to_arrow().select(columns).to_pylist()
        == local.read_all().to_arrow().select(columns).to_pylist()
    )
    assert remote.cursor("export") == local.cursor("export")
    with pytest.raises(esa.ValidationError, match=r"rejected rows(.|\n)*Hint:"):
        esa.import_events(remote, source, name="other", on_error="skip")


# -- crashes: a writer killed at each step of a commit ----------------------------------------

_WRITER = textwrap.dedent(
    """
    import json, sys
    import pyarrow as pa
    import esanalytics as esa
    store = esa.open(sys.argv[1], storage_options=json.loads(sys.argv[2]))
    what = sys.argv[3]
    if what == "ingest":
        store.ingest(pa.table({
            "stream_id": [f"account-{i % 5}" for i in range(12_000)],
            "event_type": ["MoneyDeposited"] * 12_000,
            "data": ['{"amount": 1}'] * 12_000,
            "metadata": ["{}"] * 12_000,
        }))
    elif what == "append":
        store.append("account-9", [esa.NewEvent("MoneyDeposited", {"amount": 1})])
    elif what == "seal":
        store.flush()
    elif what == "compact":
        store.compact()
    print("done")
    """
)


@pytest.mark.parametrize(
    ("point", "what", "counted"),
    [
        ("ingest.before_commit", "ingest", 0),
        ("typed.after_write", "ingest", 0),
        ("commitlog.after_write", "ingest", 12_000),  # the line is there: committed
        ("seal.before_commit", "seal", 0),
        ("compact.before_commit", "compact", 0),
    ],
)
def test_a_writer_killed_mid_commit_leaves_nothing_a_reader_counts(
    url: str, s3server: Any, point: str, what: str, counted: int
) -> None:
    opts = s3server.options()
    store = esa.open(url, create=True, storage_options=opts)
    store.append("account-1", _events(5))
    if what == "compact":
        store.flush()
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, url, json.dumps(opts), what],
        env=s3server.environ() | {"ESA_KILL_AT": point},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr  # SIGKILL: exit 137 in a shell
    after = esa.open(url, storage_options=opts)
    assert after.head == 5 + counted
    table = after.read_all().to_arrow()
    assert table["global_position"].to_pylist() == list(range(1, 6 + counted))
    assert verify(after).ok
    # the next writer goes on from there, and vacuum takes the lost files away
    after.append("account-2", _events(2))
    after.compact()
    after.vacuum(older_than=timedelta(0))
    assert Session(after).sql("SELECT count(*) FROM events").fetchall() == [(7 + counted,)]
    fs = S3FS(url, opts)
    named = {f"events/{e.path}" for e in after.files()} | {
        f"typed/{e.path}" for e in after.files() if e.typed
    }
    assert set(fs.list_files("events")) | set(fs.list_files("typed")) == named
    assert verify(after).ok


def test_a_first_ingest_killed_before_its_commit_leaves_an_empty_lake(
    url: str, s3server: Any
) -> None:
    opts = s3server.options()
    esa.open(url, create=True, storage_options=opts)
    done = subprocess.run(
        [sys.executable, "-c", _WRITER, url, json.dumps(opts), "ingest"],
        env=s3server.environ() | {"ESA_KILL_AT": "ingest.before_commit"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == -9, done.stderr
    store = esa.open(url, storage_options=opts)
    assert store.head == 0
    assert S3FS(url, opts).list_files("events")  # the lost attempt's files, named by nothing
    assert store.vacuum(older_than=timedelta(0)) >= 1
    assert S3FS(url, opts).list_files("events") == []
    store.append("account-1", _events(1))
    assert verify(store).ok


# -- writers in several processes -------------------------------------------------------------

_APPENDER = textwrap.dedent(
    """
    import json, sys, time, uuid
    from pathlib import Path
    import esanalytics as esa
    url, options, who, go = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
    store = esa.open(url, storage_options=options)
    store.head
    (go.parent / f"ready-{who}").touch()
    while not go.exists():
        time.sleep(0.005)
    acked = []
    for i in range(12):
        event = esa.NewEvent("MoneyDeposited", {"amount": i, "who": who}, event_id=str(uuid.uuid4()))
        if i % 3 == 0:  # one shared stream, appended to with the version each writer read
            while True:
                try:
                    version = store.stream_version("account-shared")
                    store.append("account-shared", [event], expected_version=version)
                    break
                except esa.ConcurrencyError:
                    continue
        else:
            store.append(f"account-{who}", [event])
        acked.append(event.event_id)
    store.close()
    print(json.dumps(acked))
    """
)


def test_writers_in_several_processes_never_both_win_a_position(
    url: str, s3server: Any, tmp_path: Path
) -> None:
    opts = s3server.options()
    esa.open(url, create=True, storage_options=opts)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, url, json.dumps(opts), str(who), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for who in range(3)
    ]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("ready-*"))) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = [proc.communicate(timeout=300) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs), [err for _, err in results]
    acked = [event_id for out, _ in results for event_id in json.loads(out)]
    store = esa.open(url, storage_options=opts)
    table = store.read_all().to_arrow()
    assert table["global_position"].to_pylist() == list(range(1, 37))  # gapless
    assert sorted(table["event_id"].to_pylist()) == sorted(acked)  # each acknowledged once
    shared = [e.version for e in store.load("account-shared")]
    assert shared == list(range(1, 13))
    assert verify(store).ok


# -- tampering ----------------------------------------------------------------------------------


def test_verify_finds_an_overwritten_data_file_and_an_edited_commit(
    sample_lake: Path, s3server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = s3server.options()
    url = f"s3://{s3_bucket}/tampered"
    fs = S3FS(url, opts)
    copy_lake(sample_lake, fs)
    assert verify(esa.open(url, storage_options=opts)).ok
    # one event's amount changed in a data file, written back whole
    store = esa.open(url, storage_options=opts)
    entry = next(e for e in store.files() if e.category == "account")
    import pyarrow.parquet as pq

    rel = f"events/{entry.path}"
    table = pq.read_table(fs.arrow_path(rel), filesystem=fs.arrow)
    data = table["data"].to_pylist()
    data[3] = data[3].replace("1", "9", 1) if "1" in data[3] else data[3] + " "
    table = table.set_column(
        table.schema.get_field_index("data"), "data", pa.array(data, table["data"].type)
    )
    with fs.open_output(rel) as out:
        pq.write_table(table, out)
    result = verify(esa.open(url, storage_options=opts))
    assert not result.ok
    assert any(f.kind == "modified" for f in result.findings), result
    # a commit object edited (its checksum no longer holds)
    url2 = f"s3://{s3_bucket}/tampered-log"
    fs2 = S3FS(url2, opts)
    copy_lake(sample_lake, fs2)
    first = fs2.list_files("_esa/commits")[0]
    fs2.write_atomic(first, fs2.read_bytes(first).replace(b'"n":1', b'"n":7'))
    with pytest.raises(esa.CorruptLakeError, match=r"damaged line at byte 0(.|\n)*Hint:"):
        esa.open(url2, storage_options=opts)  # no reader takes it
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, s3server.environ()[name])
    result = verify(url2)  # (a lake no reader takes is verified by its URL)
    assert not result.ok
    assert result.findings[0].kind == "commit_log"
    assert first == line_name(0)


def test_esa_copy_puts_a_lake_folder_on_s3_byte_for_byte(
    sample_lake: Path, s3_bucket: str, s3server: Any
) -> None:
    """The copy holds the same commit lines (so a checkpoint signed on the folder holds for
    it), the same events, and verifies; a second copy to the same prefix and a target that
    is not s3:// are refused with hints, writing nothing."""
    target = f"s3://{s3_bucket}/moved"
    env = s3server.environ()
    run = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "esanalytics.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    done = run("copy", str(sample_lake), target)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(done.stdout.splitlines()[0])
    assert summary["verified"] is True
    assert summary["events"] == 30_000
    local = esa.open(sample_lake)
    copied = esa.open(target, storage_options=s3server.options())
    assert [line.digest for line in copied.commit_lines()] == [
        line.digest for line in local.commit_lines()
    ]
    assert copied.read_all().to_arrow().equals(local.read_all().to_arrow())
    objects = S3FS(target, s3server.options()).list_files("")
    done = run("copy", str(sample_lake), target)
    assert done.returncode == 1
    assert "not empty" in done.stderr
    assert "Hint:" in done.stderr
    assert S3FS(target, s3server.options()).list_files("") == objects
    done = run("copy", str(sample_lake), str(sample_lake) + "-again")
    assert done.returncode == 1
    assert "not an s3:// URL" in done.stderr
    assert not Path(str(sample_lake) + "-again").exists()


def test_small_objects_fetched_whole_and_large_ones_by_ranges_answer_alike(
    sample_lake: Path, sample_on_s3: str, s3server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DuckDB's reads of an object up to WHOLE_OBJECT_BYTES are served from one GET of the
    whole object; of a larger one, range by range: both give the local lake's answers."""
    from esanalytics.store import s3

    local = account_balances.state(Session(esa.open(sample_lake))).order("key").fetchall()
    for whole in (0, s3.WHOLE_OBJECT_BYTES):  # every object by ranges, then every one whole
        monkeypatch.setattr(s3, "WHOLE_OBJECT_BYTES", whole)
        store = esa.open(sample_on_s3, storage_options=s3server.options())
        assert account_balances.state(Session(store)).order("key").fetchall() == local
