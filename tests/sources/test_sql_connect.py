"""Opening a SQL event store: each way it can fail says which, within seconds, with a hint;
a database with no known layout (or several) lists what it holds. Against a real PostgreSQL
cluster (tests/postgres.py) and real SQLite files."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from esanalytics.exceptions import SourceError
from esanalytics.sources.registry import open_source
from esanalytics.sources.sql import CONNECT_SECONDS


def refused(url: str, *words: str, schema: str | None = None) -> SourceError:
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        open_source(url, schema=schema)
    assert time.monotonic() - started < CONNECT_SECONDS + 5
    text = str(caught.value)
    assert "Hint:" in text
    for word in words:
        assert word in text, text
    assert "right" not in text.split("Hint:")[0].replace("refused", "")  # no password shown
    return caught.value


def test_unreachable_server_fails_within_seconds(postgres: Any) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused(f"postgresql://esa@127.0.0.1:{port}/postgres", "cannot be reached", "pg_isready")


def test_silent_server_fails_within_the_connect_timeout() -> None:
    # a listening socket that never answers: the connect timeout, not a hang
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        refused(f"postgresql://esa@127.0.0.1:{port}/postgres", "cannot be reached")


def test_wrong_password_is_a_refused_login(postgres: Any) -> None:
    url = postgres.url("postgres", user="secret", password="wrong")
    error = refused(url, "refused the login of secret", "PGPASSWORD")
    assert "wrong" not in str(error)


def test_missing_password_is_a_refused_login(postgres: Any) -> None:
    refused(postgres.url("postgres", user="secret"), "refused the login of secret")


def test_missing_database_is_named(postgres: Any) -> None:
    refused(postgres.url("no_such_db"), "no database 'no_such_db'", "psql -l")


def test_missing_sqlite_file_is_an_error_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "absent.sqlite"
    refused(f"sqlite:///{path}", "no SQLite database file", str(path))
    assert not path.exists()


def test_not_a_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.sqlite"
    path.write_text("hello, this is text\n" * 100)
    refused(f"sqlite:///{path}", "is not a SQLite database")


def test_no_known_layout_lists_the_tables(tmp_path: Path, postgres_url: str) -> None:
    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    refused(f"sqlite:///{path}", "holds no event store esa knows", "orders", "--schema")
    refused(postgres_url, "no tables")
    refused(f"sqlite:///{path}", "no event store layout 'nosuch'", "eventsourcing", schema="nosuch")


def test_a_known_layout_not_in_the_database(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    error = refused(f"sqlite:///{path}", "does not hold eventsourcing", schema="eventsourcing")
    assert "orders" in str(error)


def test_a_file_is_not_given_a_schema(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is for a database source"):
        open_source(tmp_path / "x.jsonl", schema="eventsourcing")


def test_postgres_scheme_is_postgresql(postgres_url: str) -> None:
    # postgres:// connects as postgresql:// does: the empty database is found and named
    refused(postgres_url.replace("postgresql://", "postgres://", 1), "no tables")
