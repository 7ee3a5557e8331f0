"""A second reading of the SQL event store imports, as a demanding user would use them: the
faults it found, each proven here against a real SQLite file, a real PostgreSQL cluster
(tests/postgres.py) or the real ``esa`` program, with the library's own reading or plain SQL
as the independent answer."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

import esanalytics as esa
from esanalytics.exceptions import SourceChangedError, SourceError
from esanalytics.sources import sql
from esanalytics.sources.importer import import_events
from esanalytics.sources.sql import open_sql_source
from tests.conftest import log_bytes
from tests.sources.eventsourcing_app import postgres_env
from tests.sources.test_import_cli import esa_run, failed


class Lamp(Aggregate):
    """An aggregate whose events carry no attributes of their own (``Lamp.Switched``)."""

    @event("Installed")
    def __init__(self) -> None:
        pass

    @event("Switched")
    def switch(self) -> None:
        pass


class Lamps(Application[Any]):
    """The application (PostgreSQL: its table is ``lamps_events``)."""


def lamps(env: dict[str, str], count: int) -> list[Any]:
    """Install ``count`` lamps, switch each twice; the notifications as the library reads them."""
    app = Lamps(env=env)
    try:
        for _ in range(count):
            lamp = Lamp()
            lamp.switch()
            lamp.switch()
            app.save(lamp)
        return list(app.recorder.select_notifications(start=1, limit=10_000))
    finally:
        app.close()


def test_events_with_no_attributes_of_their_own_are_read(tmp_path: Path) -> None:
    # the library stores such an event's state as the timestamp alone
    # ({"timestamp":{...}}) or with the aggregate's class ({..., "originator_topic":"..."})
    path = tmp_path / "lamps.sqlite"
    notifications = lamps(sqlite_env(path), 3)
    summary = import_events(tmp_path / "lake", f"sqlite:///{path}", create=True)
    assert summary.events == len(notifications) == 9
    events = esa.open(tmp_path / "lake").read_all().to_arrow().to_pylist()
    assert [e["event_type"] for e in events] == [n.topic.partition(":")[2] for n in notifications]
    assert [json.loads(e["data"]) for e in events] == [{}] * 9
    assert [json.loads(e["metadata"])["source_version"] for e in events] == [
        n.originator_version for n in notifications
    ]


def sqlite_env(path: Path) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}


def others(url: str) -> list[int]:
    """The backends of ``url``'s database but the caller's (the import's connections)."""
    with psycopg.connect(url, autocommit=True) as con:
        rows = con.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        ).fetchall()
    return [r[0] for r in rows]


def test_a_locked_table_is_an_error_within_seconds_not_a_hang(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lamps(postgres_env(postgres_url), 2)
    monkeypatch.setattr(sql, "LOCK_SECONDS", 1)
    lake = tmp_path / "lake"
    with psycopg.connect(postgres_url) as holder:  # (a migration, a LOCK TABLE, a VACUUM FULL)
        holder.execute("LOCK TABLE lamps_events IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            import_events(lake, postgres_url, create=True)
        assert time.monotonic() - started < 10
        holder.rollback()
    text = str(caught.value)
    assert "locked" in text, text
    assert "pg_locks" in text
    assert not lake.exists()
    assert others(postgres_url) == []  # (no connection left open)
    assert import_events(lake, postgres_url, create=True).events == 6


def test_a_connection_the_server_breaks_off_is_an_error_and_whole_batches_stay(
    postgres_url: str, tmp_path: Path
) -> None:
    lamps(postgres_env(postgres_url), 10)  # 30 events
    lake = tmp_path / "lake"
    broke = threading.Event()

    def break_off(summary: Any) -> None:  # after the first commit: the server ends the reads
        if not broke.is_set():
            broke.set()
            with psycopg.connect(postgres_url, autocommit=True) as con:
                con.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                    "current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )

    source = open_sql_source(postgres_url, batch_rows=4)
    with pytest.raises(SourceError) as caught:
        import_events(lake, source, create=True, on_batch=break_off)
    text = str(caught.value)
    assert "broke off" in text, text
    assert "run it again" in text.split("Hint:")[1]
    written = esa.open(lake).read_all().to_arrow().num_rows
    assert written > 0
    assert written % 4 == 0  # whole batches
    before = log_bytes(lake)
    assert import_events(lake, open_sql_source(postgres_url, batch_rows=4)).events == 30 - written
    assert log_bytes(lake) != before
    events = esa.open(lake).read_all().to_arrow()
    assert events.num_rows == len(set(events["event_id"].to_pylist())) == 30


def test_a_sqlite_store_recreated_with_more_rows_is_refused_not_read_from_the_middle(
    tmp_path: Path,
) -> None:
    # SQLite numbers a new table's rows from 1 again: a store deleted and written anew
    # reaches the old cursor's position, and its first rows must not be taken as imported
    path, lake = tmp_path / "lamps.sqlite", tmp_path / "lake"
    lamps(sqlite_env(path), 2)
    assert import_events(lake, f"sqlite:///{path}", create=True).events == 6
    path.unlink()
    lamps(sqlite_env(path), 4)  # 12 rows: positions 1..12, none of them imported
    before = log_bytes(lake)
    with pytest.raises(SourceChangedError) as caught:
        import_events(lake, f"sqlite:///{path}")
    assert "changed under the import's cursor" in str(caught.value)
    assert "position 6" in str(caught.value)
    assert log_bytes(lake) == before


def test_a_postgres_table_truncated_then_written_again_is_refused(
    postgres_url: str, tmp_path: Path
) -> None:
    # TRUNCATE keeps the sequence: new rows come after the cursor, and the ones it
    # removed are gone; either way the table is no longer the one the import was reading
    lake = tmp_path / "lake"
    lamps(postgres_env(postgres_url), 2)
    assert import_events(lake, postgres_url, create=True).events == 6
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("TRUNCATE lamps_events")
    lamps(postgres_env(postgres_url), 3)  # positions 7..15
    before = log_bytes(lake)
    with pytest.raises(SourceChangedError, match="changed under the import's cursor"):
        import_events(lake, postgres_url)
    assert log_bytes(lake) == before
    # and a table recreated (its sequence from 1 again) with more rows than the cursor
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("DROP TABLE lamps_events")
    lamps(postgres_env(postgres_url), 3)  # positions 1..9
    with pytest.raises(SourceChangedError, match="changed under the import's cursor"):
        import_events(lake, postgres_url)
    assert log_bytes(lake) == before


def test_the_same_table_name_in_another_postgres_schema_is_another_source(
    postgres_url: str, tmp_path: Path
) -> None:
    # with search_path=a, "lamps_events" is a.lamps_events; without, public.lamps_events: the
    # import must say it reads another table, not go on in it (or call it changed)
    lamps(postgres_env(postgres_url), 2)  # public.lamps_events
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("CREATE SCHEMA a")
    lamps(postgres_env(postgres_url, POSTGRES_SCHEMA="a"), 3)  # a.lamps_events
    lake, table = tmp_path / "lake", "eventsourcing:lamps_events"
    in_a = postgres_url + "?options=-csearch_path%3Da"
    assert import_events(lake, in_a, create=True, name="lamps", schema=table).events == 9
    before = log_bytes(lake)
    with pytest.raises(SourceError) as caught:
        import_events(lake, postgres_url, name="lamps", schema=table)
    text = str(caught.value)
    assert "a.lamps_events" in text, text
    assert "public.lamps_events" in text
    assert log_bytes(lake) == before
    assert import_events(lake, in_a, name="lamps", schema=table).events == 0


def test_a_password_in_the_url_is_shown_nowhere(postgres: Any, tmp_path: Path) -> None:
    # libpq takes the password from the URL's user part or from ?password=; either may be
    # wrong in its percent-encoding, and libpq's message then quotes it
    url = postgres.database()
    lamps(postgres_env(url), 1)
    lake = tmp_path / "lake"
    done = esa_run("import", lake, url + "?password=Hunter2pw", "--create")
    assert done.returncode == 0, done.stderr
    shown = done.stdout + done.stderr + esa_run("info", lake).stdout
    assert "Hunter2pw" not in shown, shown
    assert not [p for p in lake.rglob("*") if p.is_file() and b"Hunter2pw" in p.read_bytes()]
    port = postgres.port
    for bad, words in [
        (f"postgresql://esa:Hunter2%pw@127.0.0.1:{port}/postgres", ["URL"]),
        (f"postgresql://esa@127.0.0.1:{port}/postgres?password=Hunter2pw&sslmode=no", ["URL"]),
        ("postgresql://esa:Hunter2pw@127.0.0.1:port/postgres", ["URL", "Port"]),
        ("postgresql://esa:Hunter2pw@127.0.0.1:99999/postgres", ["URL", "Port"]),
        ("postgresql://esa:Hunter2pw@[::1/postgres", ["URL"]),
    ]:
        text = failed(esa_run("import", tmp_path / "other", bad, "--create"), *words)
        assert "Hunter2" not in text, text
        assert "Unexpected" not in text, text


def test_a_locked_sqlite_database_is_said_to_be_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # in the rollback-journal mode (not WAL), a writer's EXCLUSIVE lock keeps readers out
    import sqlite3

    path, lake = tmp_path / "lamps.sqlite", tmp_path / "lake"
    lamps(sqlite_env(path), 1)
    with sqlite3.connect(path) as con:
        con.execute("PRAGMA journal_mode = DELETE")
    monkeypatch.setattr(sql, "LOCK_SECONDS", 1)
    writer = sqlite3.connect(path, isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        with pytest.raises(SourceError) as caught:
            import_events(lake, f"sqlite:///{path}", create=True)
        assert time.monotonic() - started < 10
    finally:
        writer.close()
    text = str(caught.value)
    assert "locked" in text, text
    assert "not a SQLite database" not in text
    assert not lake.exists()
    assert import_events(lake, f"sqlite:///{path}", create=True).events == 3


def test_esa_info_says_where_a_sql_import_stands_in_words(
    postgres_url: str, tmp_path: Path
) -> None:
    # positions taken and never used (rolled-back inserts) are gaps the cursor keeps looking
    # in: up to 1000 of them, which esa info printed as raw JSON
    lamps(postgres_env(postgres_url), 1)
    with psycopg.connect(postgres_url, autocommit=True) as con:
        for _ in range(40):  # every other position: 40 gaps
            con.execute("SELECT nextval('lamps_events_notification_id_seq')")
            with con.transaction():
                con.execute(
                    "INSERT INTO lamps_events (originator_id, originator_version, topic, state) "
                    "SELECT gen_random_uuid(), originator_version, topic, state FROM lamps_events "
                    "WHERE notification_id = 1"
                )
    lake = tmp_path / "lake"
    assert import_events(lake, postgres_url, create=True).events == 43
    out = esa_run("info", lake).stdout
    line = " ".join(out[out.index("import 'lamps_events'") :].split())  # (lines wrap)
    assert "up to lamps_events position 83, 40 gaps below it looked in" in line, line
    assert len(line) < 300, line


class Note(Aggregate):
    """An aggregate whose events grow: small at first, then of ``size`` characters."""

    @event("Written")
    def __init__(self, text: str) -> None:
        self.text = text


class Notes(Application[Any]):
    """The application (PostgreSQL: its table is ``notes_events``)."""


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_batches_stay_bounded_in_bytes_when_the_rows_grow(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    # a batch's row count came from the rows before it: 1,000 small rows, then rows of
    # 100 kB, made a batch of every large row (30 times the bound here; at 64 MB with
    # 100,000-row batches, gigabytes)
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'notes.sqlite'}"
        env = sqlite_env(tmp_path / "notes.sqlite")
    else:
        url = request.getfixturevalue("postgres_url")
        env = postgres_env(url)
    app = Notes(env=env)
    try:
        for n in range(1200):
            app.save(Note(f"n{n}"))
        for n in range(150):
            app.save(Note(f"{n:04}" + "x" * 100_000))
    finally:
        app.close()
    bound = 1 << 20
    monkeypatch.setattr(sql, "BATCH_BYTES", bound)
    con = duckdb.connect()
    sizes, rows = [], []
    for batch in open_sql_source(url).read(None, con=con):
        sizes.append(sum(len(line) for line in batch.lines.to_pylist()))
        rows += batch.at.to_pylist()
    assert len(rows) == len(set(rows)) == 1350  # every row once
    # the bound, the row that passes it, and what a line adds to a row (ids, metadata)
    assert max(sizes[1:]) <= bound + 200_000, sizes


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_table_dropped_while_followed_is_a_changed_source(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        path = tmp_path / "lamps.sqlite"
        url, env, table = f"sqlite:///{path}", sqlite_env(path), "stored_events"
    else:
        url = request.getfixturevalue("postgres_url")
        env, table = postgres_env(url), "lamps_events"
    lamps(env, 1)
    lake, stop = tmp_path / "lake", threading.Event()

    def drop(summary: Any) -> None:  # after the first commit, the application's table goes
        if kind == "sqlite":
            import sqlite3

            with sqlite3.connect(path) as con:
                con.execute(f"DROP TABLE {table}")
        else:
            with psycopg.connect(url, autocommit=True) as con:
                con.execute(f"DROP TABLE {table}")

    with pytest.raises(SourceChangedError) as caught:
        import_events(
            lake, url, create=True, follow=True, poll_seconds=0.05, stop=stop, on_batch=drop
        )
    assert table in str(caught.value)
    assert "Hint:" in str(caught.value)
    assert esa.open(lake).read_all().to_arrow().num_rows == 3


def test_libpq_options_with_an_encoded_space_reach_both_connections(
    postgres_url: str, tmp_path: Path
) -> None:
    # ?options=-c%20search_path%3Da is libpq's way to pick a schema in a URL; re-encoding it
    # for the Arrow connection made the space a '+', which PostgreSQL refused
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute("CREATE SCHEMA a")
    lamps(postgres_env(postgres_url, POSTGRES_SCHEMA="a"), 2)
    lamps(postgres_env(postgres_url), 1)
    url = postgres_url + "?options=-c%20search_path%3Da"
    summary = import_events(
        tmp_path / "lake", url, create=True, schema="eventsourcing:lamps_events"
    )
    assert summary.events == 6  # a.lamps_events, not public's 3


def test_a_server_that_answers_no_is_not_called_unreachable(postgres: Any, tmp_path: Path) -> None:
    # the server was reached and refused what the URL asked (a setting it does not know)
    url = postgres.url("postgres") + "?options=-c%20no_such_setting%3D1"
    text = failed(esa_run("import", tmp_path / "lake", url, "--create"), "no_such_setting")
    assert "cannot be reached" not in text
    assert "pg_isready" not in text


def test_a_user_without_select_is_told_to_be_granted_it(postgres_url: str, tmp_path: Path) -> None:
    # information_schema lists only the tables a user may use: one without SELECT was told
    # the database "has no tables"
    lamps(postgres_env(postgres_url), 1)
    user = "reader_" + postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f"CREATE ROLE {user} LOGIN")
    url = postgres_url.replace("esa@", f"{user}@", 1)
    lake = tmp_path / "lake"
    with pytest.raises(SourceError) as caught:
        import_events(lake, url, create=True)
    text = str(caught.value)
    assert "lamps_events" in text, text
    assert f"GRANT SELECT ON lamps_events TO {user}" in text
    assert not lake.exists()
    with psycopg.connect(postgres_url, autocommit=True) as con:
        con.execute(f"GRANT SELECT ON lamps_events TO {user}")
    assert import_events(lake, url, create=True).events == 3


def test_a_latin1_database_is_read_as_its_text_says(postgres: Any, tmp_path: Path) -> None:
    # ADBC took the server's encoding's bytes for UTF-8: 'é' in a LATIN1 database broke
    name = "latin1_" + postgres.database().rsplit("/", 1)[1]
    with psycopg.connect(postgres.url(), autocommit=True) as con:
        con.execute(
            f"CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
    url = postgres.url(name)
    lamps(postgres_env(url), 1)
    with psycopg.connect(url, autocommit=True) as con:
        con.execute(
            "UPDATE lamps_events SET topic = 'crème.brûlée:Lamp.Installed' WHERE notification_id = 1"
        )
        topics = [r[0] for r in con.execute("SELECT topic FROM lamps_events ORDER BY 1")]
    assert import_events(tmp_path / "lake", url, create=True).events == 3
    events = esa.open(tmp_path / "lake").read_all().to_arrow().to_pylist()
    assert sorted(json.loads(e["metadata"])["topic"] for e in events) == topics
    assert "crème.brûlée:Lamp.Installed" in topics


def test_another_url_for_an_import_is_explained_in_database_terms(
    postgres: Any, tmp_path: Path
) -> None:
    # the hint spoke of paths and moved files, and of rows written twice under a new name,
    # which an event store's rows (each with its event id) never are
    url = postgres.database()
    lamps(postgres_env(url), 1)
    lake = tmp_path / "lake"
    assert esa_run("import", lake, url, "--create", "--name", "lamps").returncode == 0
    other = url.replace("127.0.0.1", "localhost", 1)
    text = failed(esa_run("import", lake, other, "--name", "lamps"), "localhost")
    hint = text.split("Hint:")[1]
    assert "path" not in hint, hint
    assert "host" in hint
    assert "--schema" in hint
