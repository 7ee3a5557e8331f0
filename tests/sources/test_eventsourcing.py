"""Importing the ``eventsourcing`` library's stored events, written by the library itself.

Each test runs against the library's SQLite recorder (a file) and its PostgreSQL recorder (a
database in the throwaway cluster of tests/postgres.py). The independent reading is the
library's own: its recorder's ``select_notifications`` and its mapper's decoded domain events.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

import esanalytics as esa
from esanalytics.exceptions import SourceChangedError, SourceError
from esanalytics.sources.importer import rejects_path
from esanalytics.sources.sql import open_sql_source
from tests.conftest import log_bytes
from tests.sources.eventsourcing_app import Bank, bank, postgres_env, sqlite_env


@dataclass
class Store:
    """Where the library writes (``env``) and esa reads (``url``)."""

    kind: str
    env: dict[str, str]
    url: str
    table: str  # the library's events table: SQLite's stored_events, PostgreSQL's <app>_events

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Plain SQL against the store's table (the bad-row and gap tests)."""
        if self.kind == "sqlite":
            import sqlite3

            with sqlite3.connect(self.env["SQLITE_DBNAME"]) as con:
                return con.execute(sql.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as con:
            cursor = con.execute(sql, params)  # type: ignore[arg-type]
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        path = tmp_path / "bank.sqlite"
        return Store("sqlite", sqlite_env(path), f"sqlite:///{path}", "stored_events")
    url = request.getfixturevalue("postgres_url")
    return Store("postgres", postgres_env(url), url, "bank_events")


def plain(value: Any) -> Any:
    """A decoded state value as the import keeps it in JSON."""
    from tests.sources.eventsourcing_app import Point

    if isinstance(value, Point):
        return {"x": value.x, "y": value.y}
    if isinstance(value, UUID | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def library_reading(app: Bank, *, skip: frozenset[int] = frozenset()) -> list[dict[str, Any]]:
    """Every stored event as the library reads it back, in notification order (but the
    notifications ``skip`` names)."""
    out = []
    notifications: list[Any] = []
    start = 1
    for stop in [*sorted(skip), None]:  # (the library cannot read a row without originator)
        notifications += app.recorder.select_notifications(
            start=start, limit=1_000_000, stop=None if stop is None else stop - 1
        )
        start = (stop or 0) + 1
    for notification in notifications:
        event = app.mapper.to_domain_event(notification)
        state = vars(event)
        _, _, qualname = notification.topic.partition(":")
        out.append(
            {
                "stream_id": str(notification.originator_id),
                "event_type": qualname,
                "category": qualname.rsplit(".", 1)[0],
                "occurred_at": event.timestamp,
                "data": {
                    k: plain(v)
                    for k, v in state.items()
                    if k
                    not in ("originator_id", "originator_version", "timestamp", "originator_topic")
                },
                "source_version": notification.originator_version,
                "topic": notification.topic,
            }
        )
    return out


def lake_reading(lake: Path) -> list[dict[str, Any]]:
    events = esa.open(lake).read_all().to_arrow().to_pylist()
    out = []
    for event in events:
        meta = json.loads(event["metadata"])
        out.append(
            {
                "stream_id": event["stream_id"],
                "event_type": event["event_type"],
                "category": event["category"],
                "occurred_at": event["occurred_at"],
                "data": json.loads(event["data"]),
                "source_version": meta["source_version"],
                "topic": meta["topic"],
            }
        )
    return out


def write(app: Bank, accounts: int, *, close: bool = True) -> None:
    ids = [app.open(f"owner-{n}", deposits=n % 3) for n in range(accounts)]
    if close:
        app.close_account(ids[0])


def test_round_trip_against_the_library_reading(store: Store, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with bank(store.env) as app:
        write(app, 12)
        summary = esa.import_events(lake, store.url, create=True)
        expected = library_reading(app)
    assert summary.events == len(expected) == 12 + 12 + 1
    assert lake_reading(lake) == expected
    events = esa.open(lake).read_all().to_arrow().to_pylist()
    # the created event's aggregate class goes to the metadata; the stream's versions are the
    # library's versions
    first = json.loads(events[0]["metadata"])
    assert first["originator_topic"] == "tests.sources.eventsourcing_app:Account"
    assert "originator_topic" not in json.loads(events[0]["data"])
    by_stream: dict[str, list[int]] = {}
    for event in events:
        by_stream.setdefault(event["stream_id"], []).append(event["version"])
    assert all(v == list(range(1, len(v) + 1)) for v in by_stream.values())
    # a re-import writes nothing
    before = log_bytes(lake)
    again = esa.import_events(lake, store.url)
    assert (again.events, again.batches) == (0, 0)
    assert log_bytes(lake) == before


def test_incremental_after_more_events_and_small_batches(store: Store, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with bank(store.env) as app:
        write(app, 5)
        first = esa.import_events(lake, open_sql_source(store.url, batch_rows=3), create=True)
        write(app, 7, close=False)
        second = esa.import_events(lake, open_sql_source(store.url, batch_rows=3))
        expected = library_reading(app)
    assert first.events + second.events == len(expected)
    assert second.resumed
    assert second.batches > 1
    assert lake_reading(lake) == expected


def test_follow_picks_up_new_events(store: Store, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    stop = threading.Event()
    with bank(store.env) as app:
        write(app, 3)
        result: dict[str, Any] = {}

        def follow() -> None:
            try:
                result["summary"] = esa.import_events(
                    lake, store.url, create=True, follow=True, poll_seconds=0.1, stop=stop
                )
            except BaseException as error:  # handed to the test below
                result["error"] = error

        follower = threading.Thread(target=follow)
        follower.start()
        try:
            for round_ in range(3):
                write(app, 2, close=False)
                want = len(library_reading(app))
                deadline = time.monotonic() + 30
                while _count(lake) < want:
                    assert "error" not in result, result.get("error")
                    assert time.monotonic() < deadline, f"round {round_}: {_count(lake)} < {want}"
                    time.sleep(0.05)
        finally:
            stop.set()
            follower.join(timeout=60)
        expected = library_reading(app)
    assert "error" not in result, result.get("error")
    assert lake_reading(lake) == expected


def _count(lake: Path) -> int:
    if not (lake / "_esa" / "lake.json").exists():
        return 0
    return esa.open(lake).head


def test_compressed_states_are_read(store: Store, tmp_path: Path) -> None:
    store.env["COMPRESSOR_TOPIC"] = "eventsourcing.compressor:ZlibCompressor"
    lake = tmp_path / "lake"
    with bank(store.env) as app:
        write(app, 4)
        assert bytes(store.execute(f"SELECT state FROM {store.table}")[0][0])[:1] == b"x"  # zlib
        esa.import_events(lake, store.url, create=True)
        assert lake_reading(lake) == library_reading(app)


def test_an_encrypted_state_stops_the_import_naming_the_row(store: Store, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with bank(store.env) as app:
        write(app, 2)  # 4 events
    esa.import_events(lake, store.url, create=True)
    before = log_bytes(lake)
    store.env["CIPHER_TOPIC"] = "tests.sources.eventsourcing_app:ToyCipher"
    with bank(store.env) as app:
        write(app, 2)
    for on_error in ("raise", "skip"):
        with pytest.raises(SourceError) as caught:
            esa.import_events(lake, store.url, on_error=on_error)
        text = str(caught.value)
        assert f"{store.table}#5: " in text, text
        assert "encrypted" in text
        assert "Hint: export the events through the application" in text
        assert log_bytes(lake) == before


def test_bad_rows_are_named_then_rejected_with_reasons(store: Store, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with bank(store.env) as app:
        write(app, 2)
        esa.import_events(lake, store.url, create=True)
        good = library_reading(app)
    before = log_bytes(lake)
    (row,) = store.execute(
        f"SELECT originator_id, topic FROM {store.table} WHERE originator_version = 1 LIMIT 1"
    )
    bad = [(row[0], 90, row[1], b"this is not JSON")]
    if store.kind == "sqlite":  # (PostgreSQL's table refuses a null originator id)
        bad.append((None, 1, row[1], b'{"timestamp":"2025-01-01T00:00:00+00:00"}'))
    for values in bad:
        store.execute(
            f"INSERT INTO {store.table} (originator_id, originator_version, topic, state) "
            "VALUES (%s, %s, %s, %s)",
            values,
        )
    first_bad = len(good) + 1
    with bank(store.env) as app:
        write(app, 1, close=False)
        expected = library_reading(app, skip=frozenset(range(first_bad, first_bad + len(bad))))
    with pytest.raises(SourceError) as caught:
        esa.import_events(lake, store.url)
    assert f"{store.table}#{first_bad}: not valid JSON" in str(caught.value)
    assert log_bytes(lake) == before
    summary = esa.import_events(lake, store.url, on_error="skip")
    assert summary.rejected == len(bad)
    rejected = [
        json.loads(line) for line in rejects_path(lake, store.table).read_text().splitlines()
    ]
    reasons = {r["where"]: r["reason"] for r in rejected}
    assert reasons[f"{store.table}#{first_bad}"] == "not valid JSON"
    if store.kind == "sqlite":
        assert reasons[f"{store.table}#{first_bad + 1}"].startswith("no stream id")
    assert lake_reading(lake) == expected


def test_several_eventsourcing_tables_are_listed_then_one_is_chosen(tmp_path: Path) -> None:
    path = tmp_path / "two.sqlite"
    with bank(sqlite_env(path)) as app:
        write(app, 2)
    import sqlite3

    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE other_events AS SELECT * FROM stored_events")
    with pytest.raises(SourceError, match="several eventsourcing events tables: other_events, "
                       "stored_events") as caught:  # fmt: skip
        esa.import_events(tmp_path / "lake", f"sqlite:///{path}", create=True)
    assert "--schema eventsourcing:other_events" in str(caught.value)
    summary = esa.import_events(
        tmp_path / "lake", f"sqlite:///{path}", schema="eventsourcing:stored_events", create=True
    )
    assert summary.events == 4


def test_snapshots_and_tracking_tables_are_left_out(tmp_path: Path) -> None:
    path = tmp_path / "snap.sqlite"
    env = sqlite_env(path, IS_SNAPSHOTTING_ENABLED="y")
    with bank(env) as app:
        ids = [app.open("a", deposits=3)]
        app.take_snapshot(ids[0])
        tables = {name for (name,) in Store("sqlite", env, "", "").execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}  # fmt: skip
        assert "stored_snapshots" in tables
        summary = esa.import_events(tmp_path / "lake", f"sqlite:///{path}", create=True)
        assert summary.events == len(library_reading(app)) == 4


def test_the_import_never_writes_to_a_sqlite_source(tmp_path: Path) -> None:
    path = tmp_path / "bank.sqlite"
    with bank(sqlite_env(path)) as app:
        write(app, 3)
    before = path.read_bytes()
    esa.import_events(tmp_path / "lake", f"sqlite:///{path}", create=True)
    assert path.read_bytes() == before
    # (a reader of a WAL database may leave SQLite's shared-memory index; no log of changes)
    others = {p.name for p in tmp_path.iterdir()} - {"lake", path.name, f"{path.name}-shm"}
    assert all(not (tmp_path / n).stat().st_size for n in others), others


@pytest.fixture
def two_writers(postgres_url: str) -> Iterator[tuple[Store, Any, Any]]:
    import psycopg

    store = Store("postgres", postgres_env(postgres_url), postgres_url, "bank_events")
    first, second = psycopg.connect(postgres_url), psycopg.connect(postgres_url)
    try:
        yield store, first, second
    finally:
        first.close()
        second.close()


_COPY = (
    "INSERT INTO bank_events (originator_id, originator_version, topic, state) "
    "SELECT gen_random_uuid(), originator_version, topic, state FROM bank_events "
    "WHERE notification_id = 1 RETURNING notification_id"
)


def test_a_row_that_commits_after_a_higher_one_is_not_lost(
    two_writers: tuple[Store, Any, Any], tmp_path: Path
) -> None:
    store, first, second = two_writers
    lake = tmp_path / "lake"
    with bank(store.env) as app:
        write(app, 2)  # notifications 1..5
    esa.import_events(lake, store.url, create=True)
    (low,) = first.execute(_COPY).fetchone()  # takes 6, not committed yet
    (high,) = second.execute(_COPY).fetchone()  # takes 7
    second.commit()
    assert (low, high) == (5, 6)
    summary = esa.import_events(lake, store.url)
    assert summary.events == 1
    cursor = esa.open(lake).cursor("bank_events")
    assert cursor is not None
    assert cursor["at"]["position"] == 6
    assert [g[:2] for g in cursor["at"]["gaps"]] == [[5, 5]]
    first.commit()
    later = esa.import_events(lake, store.url)
    assert later.events == 1
    cursor = esa.open(lake).cursor("bank_events")
    assert cursor is not None
    assert cursor["at"]["gaps"] == []
    with bank(store.env) as app:
        assert sorted(e["stream_id"] for e in lake_reading(lake)) == sorted(
            e["stream_id"] for e in library_reading(app)
        )
        assert len(lake_reading(lake)) == 6


def test_a_gap_that_never_fills_is_forgotten_after_the_bound(
    two_writers: tuple[Store, Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from esanalytics.sources import sql

    store, first, second = two_writers
    lake = tmp_path / "lake"
    with bank(store.env) as app:
        write(app, 2)
    first.execute(_COPY)
    first.rollback()  # 5 is never used
    second.execute(_COPY)
    second.commit()  # 6
    esa.import_events(lake, store.url, create=True)
    cursor = esa.open(lake).cursor("bank_events")
    assert cursor is not None
    assert [g[:2] for g in cursor["at"]["gaps"]] == [[5, 5]]
    esa.import_events(lake, store.url)  # looked for again, still kept (within the bound)
    cursor = esa.open(lake).cursor("bank_events")
    assert cursor is not None
    assert [g[:2] for g in cursor["at"]["gaps"]] == [[5, 5]]
    second.execute(_COPY)
    second.commit()  # 7
    monkeypatch.setattr(sql, "GAP_SECONDS", 0.0)
    esa.import_events(lake, store.url)
    cursor = esa.open(lake).cursor("bank_events")
    assert cursor is not None
    assert cursor["at"] == {
        "table": "bank_events", "position": 7, "gaps": [],
        "mark": esa.open(lake).read_all().to_arrow()["event_id"][-1].as_py(),
    }  # fmt: skip


def test_transcodings_of_every_shape_are_decoded(tmp_path: Path) -> None:
    """The library's own transcodings, one of the application's own whose data is an object,
    a class_version 2 event (parsed, not cut), and text that looks like a transcoding."""
    from tests.sources.eventsourcing_app import Post

    path = tmp_path / "post.sqlite"
    app = Post(env=sqlite_env(path))
    try:
        for n in range(3):
            app.send(f"parcel-{n}")
        expected = library_reading(app)  # type: ignore[arg-type]
    finally:
        app.close()
    summary = esa.import_events(tmp_path / "lake", f"sqlite:///{path}", create=True)
    assert summary.events == 6
    assert lake_reading(tmp_path / "lake") == expected
    events = esa.open(tmp_path / "lake").read_all().to_arrow().to_pylist()
    assert [e["schema_version"] for e in events[:2]] == [1, 2]
    moved = json.loads(events[1]["data"])
    assert moved["to"] == {"x": 3, "y": 4}
    assert moved["note"].startswith('text that looks like {"_type_":"uuid_hex","_data_":"000')


def test_a_store_emptied_under_the_cursor_is_refused(store: Store, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    with bank(store.env) as app:
        write(app, 3)
    esa.import_events(lake, store.url, create=True)
    before = log_bytes(lake)
    store.execute(f"DELETE FROM {store.table}")
    if store.kind == "postgres":
        store.execute(f"ALTER SEQUENCE {store.table}_notification_id_seq RESTART WITH 1")
    with bank(store.env) as app:
        write(app, 1, close=False)  # positions 1..1 again, below the cursor (7)
    with pytest.raises(SourceChangedError, match="changed under the import's cursor") as caught:
        esa.import_events(lake, store.url)
    assert "highest position is now 1" in str(caught.value)
    assert "--name" in str(caught.value)
    assert log_bytes(lake) == before


def test_large_states_are_read_in_batches_of_bounded_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from esanalytics.sources import sql

    monkeypatch.setattr(sql, "FIRST_BATCH_ROWS", 2)
    monkeypatch.setattr(sql, "BATCH_BYTES", 1 << 20)
    path = tmp_path / "big.sqlite"
    with bank(sqlite_env(path)) as app:
        for n in range(6):
            account = app.open(f"owner-{n}", deposits=0)
            big = app.repository.get(account)
            for _ in range(4):
                big.deposit(Decimal("1"), {"memo": "x" * 200_000})
            app.save(big)
        expected = library_reading(app)
    summary = esa.import_events(tmp_path / "lake", f"sqlite:///{path}", create=True)
    assert summary.events == 30
    assert summary.batches >= 5  # about 5 rows of 200 kB a batch of 1 MB
    assert lake_reading(tmp_path / "lake") == expected
