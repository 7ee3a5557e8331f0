"""``esa import LAKE postgresql://...`` (and ``sqlite:///...``) picks the event store by the
tables it finds, and ``--schema`` chooses when a database holds several; a row committed
late, below the cursor, is still imported; and an import of Rails Event Store tables killed
(SIGKILL) again and again while the application writes ends with every event exactly once.

Every command runs in a real ``esa`` process, the way a user runs it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import esanalytics as esa
from tests.conftest import log_bytes, run_esa
from tests.sources.stores_data import Axon, Db, Marten, RailsEventStore, res_events
from tests.sources.test_file_sources import events_of


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Db]:
    """A connection to a fresh PostgreSQL database, to write the stores' rows with."""
    db = Db(postgres_url)
    yield db
    db.close()


def imported(lake: Path, *args: str) -> dict[str, object]:
    """``esa import LAKE ARGS --create --format json`` in a real process: its summary."""
    done = run_esa("import", str(lake), *args, "--create", "--format", "json")
    assert done.returncode == 0, done.stderr
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


@pytest.mark.parametrize("store", ["rails_event_store", "marten", "axon"])
def test_each_store_is_found_by_its_tables(
    pg: Db, postgres_url: str, tmp_path: Path, store: str
) -> None:
    if store == "rails_event_store":
        res = RailsEventStore(pg)
        res.create()
        res.publish(res_events(3), "Ordering::Order$1")
        table = "event_store_events"
    elif store == "marten":
        marten = Marten(pg)
        marten.create()
        marten.append(
            "7b0c5a52-4f6b-4f43-9a55-3a4c2f0c0c01", [("order_placed", {"n": i}) for i in range(3)]
        )
        table = "mt_events"
    else:
        axon = Axon(pg)
        axon.create()
        axon.publish("gc-1", [("io.axoniq.CardIssued", {"n": i}) for i in range(3)])
        table = "domain_event_entry"
    summary = imported(tmp_path / "lake", postgres_url)
    assert (summary["name"], summary["events"]) == (table, 3)


def test_sqlite_stores_are_found_by_their_tables(tmp_path: Path) -> None:
    for store, table in ((RailsEventStore, "event_store_events"), (Axon, "domain_event_entry")):
        url = f"sqlite:///{tmp_path / (table + '.sqlite3')}"
        db = Db(url)
        try:
            if store is Axon:
                axon = Axon(db)
                axon.create()
                axon.publish("gc-1", [("io.axoniq.CardIssued", {"n": 1})])
            else:
                res = RailsEventStore(db, data_type="binary")
                res.create()
                res.publish(res_events(1), "Ordering::Order$1")
        finally:
            db.close()
        summary = imported(tmp_path / f"lake-{table}", url)
        assert (summary["name"], summary["events"]) == (table, 1)


def test_a_database_with_several_stores_needs_schema(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    res = RailsEventStore(pg)
    res.create()
    res.publish(res_events(2), "Ordering::Order$1")
    axon = Axon(pg)
    axon.create()
    axon.publish("gc-1", [("io.axoniq.CardIssued", {"n": 1})])
    marten = Marten(pg)
    marten.create()
    marten.append("7b0c5a52-4f6b-4f43-9a55-3a4c2f0c0c02", [("order_placed", {"n": 1})])
    lake = tmp_path / "lake"
    done = run_esa("import", str(lake), postgres_url, "--create")
    assert done.returncode == 1
    assert done.stderr.lstrip().startswith("error: "), done.stderr
    assert "rails_event_store, marten, axon" in done.stderr
    assert "Hint: choose one with --schema" in done.stderr
    assert "Traceback" not in done.stderr
    assert not lake.exists()
    assert imported(lake, postgres_url, "--schema", "axon")["events"] == 1
    assert imported(lake, postgres_url, "--schema", "rails_event_store")["events"] == 2
    assert imported(lake, postgres_url, "--schema", "marten")["events"] == 1
    assert [e["stream_id"] for e in events_of(lake)] == [
        "gc-1",
        *["Ordering::Order$1"] * 2,
        "7b0c5a52-4f6b-4f43-9a55-3a4c2f0c0c02",
    ]


def test_a_row_committed_late_below_the_cursor_is_imported(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    """A transaction takes id 4 and commits after ids 5 and 6 were read: the cursor's gaps
    find it on the next run, after the rows read before it."""
    res = RailsEventStore(pg)
    res.create()
    res.publish(res_events(3), "Ordering::Order$1")
    slow = Db(postgres_url)
    try:
        late = RailsEventStore(slow)
        events = res_events(3, start=3)
        late.db.run("BEGIN")
        late.db.run(  # (what publish does, held open)
            "INSERT INTO event_store_events (event_id, event_type, metadata, data, created_at) "
            "VALUES (?, ?, '{}', '{}', now())",
            (events[0].event_id, events[0].event_type),
        )
        res.publish(events[1:], "Ordering::Order$2")
        lake = tmp_path / "lake"
        assert esa.import_events(lake, postgres_url, create=True).events == 5
        late.db.run(
            "INSERT INTO event_store_events_in_streams (stream, position, event_id, created_at) "
            "VALUES ('Ordering::Order$3', 0, ?, now())",
            (events[0].event_id,),
        )
        late.db.run("COMMIT")
    finally:
        slow.close()
    assert esa.import_events(lake, postgres_url).events == 1
    got = events_of(lake)
    assert [e["metadata"]["source_position"] for e in got] == [1, 2, 3, 5, 6, 4]
    assert got[-1]["stream_id"] == "Ordering::Order$3"


# -- SIGKILL ----------------------------------------------------------------------------------

CHILD = """
import sys
import esanalytics as esa
from esanalytics.sources.sql import open_sql_source

source = open_sql_source(sys.argv[2], batch_rows=int(sys.argv[3]))
esa.import_events(sys.argv[1], source, name="res", create=True)
"""
KILL_POINTS = [
    "commitlog.after_write:2",
    "append.before_commit:3",
    "append.after_commit:1",
    "ingest.before_commit:1",
    "ingest.after_commit:2",
    "ingest.after_publish:1",
]


def test_an_import_killed_again_and_again_ends_with_every_event_once(
    pg: Db, postgres_url: str, tmp_path: Path
) -> None:
    """At each named kill point (the commit line written, not synced; files written, the
    line not; the line synced, nothing published...) and at random moments, while RES keeps
    publishing and linking; after the last run: every event once, in id order, verify
    clean, a re-run writes nothing."""
    rng = random.Random(11)
    res = RailsEventStore(pg)
    res.create()
    lake = tmp_path / "lake"
    published = 0
    kills = 0

    def publish(n: int) -> None:
        nonlocal published
        for event in res_events(n, start=published):
            res.publish([event], f"Ordering::Order${published % 9}")
            if published % 4 == 0:
                res.link([event.event_id], f"Customer${published % 3}")
            published += 1

    log = tmp_path / "children.err"

    def child(kill_at: str | None, batch_rows: int) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env.pop("ESA_KILL_AT", None)
        if kill_at:
            env["ESA_KILL_AT"] = kill_at
        with open(log, "ab") as err:
            return subprocess.Popen(
                [sys.executable, "-c", CHILD, str(lake), postgres_url, str(batch_rows)],
                env=env,
                stderr=err,
            )

    publish(300)
    for point in KILL_POINTS:  # each point, with small batches (some appends, some ingests)
        run = child(point, rng.choice([7, 40, 120]))
        code = run.wait(timeout=120)
        assert code in (0, -signal.SIGKILL), log.read_text()
        kills += code == -signal.SIGKILL
        publish(rng.randint(5, 60))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and kills < len(KILL_POINTS) + 5:  # and at random moments
        run = child(None, 25)
        time.sleep(rng.uniform(0.3, 1.5))
        if run.poll() is None:
            run.send_signal(signal.SIGKILL)
            kills += 1
        assert run.wait(timeout=60) in (0, -signal.SIGKILL), log.read_text()
        publish(rng.randint(20, 80))
    assert kills >= len(KILL_POINTS)
    progress = [int(c["at"]["position"]) for c in _cursors(lake)]
    print(f"{kills} kills; the cursor after each run: {progress}")
    run = child(None, 50)
    assert run.wait(timeout=120) == 0, log.read_text()

    from esanalytics.audit import verify

    got = events_of(lake)
    ids = [row[0] for row in pg.run("SELECT event_id::text FROM event_store_events ORDER BY id")]
    assert [e["event_id"] for e in got] == ids, "not every event exactly once, in id order"
    assert len(ids) == published
    assert verify(esa.open(lake)).ok
    before = log_bytes(lake)
    assert esa.import_events(lake, postgres_url, name="res").events == 0
    assert log_bytes(lake) == before


def _cursors(lake: Path) -> list[dict[str, object]]:
    """Every cursor the lake's commit log holds, in order."""
    out = []
    for line in (lake / "_esa" / "commits.log").read_text().splitlines():
        try:  # (a line is JSON, a tab and its CRC)
            cursor = json.loads(line.rpartition("\t")[0]).get("cursor")
        except ValueError:
            continue
        if cursor:
            out.append(cursor)
    return out
