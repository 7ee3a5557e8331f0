"""Import benchmarks, each beside its plain peer in the same run.

    python3 -m uv run python benchmarks/import_bench.py                      # every part
    python3 -m uv run python benchmarks/import_bench.py --only file --events 1000000
    python3 -m uv run python benchmarks/import_bench.py --only kafka,eventsourcing --events 1000000

``--only`` picks parts (``file``, ``kafka``, ``eventsourcing``; default all); ``--events`` sets
the size of each (default: 10 million for ``file``, 1 million for the others).

``file``: writes the sample domain's events as one JSON Lines file (nested payload and
metadata objects, ISO times with zones), then measures:

- the floor for "read JSON, write Parquet": DuckDB's own ``read_json`` -> ``COPY ... TO
  parquet`` of the same file, with no ordering, ids, hashing or guarantees;
- ``esa import`` of the file (the Python entry point, as the CLI calls it), events/s and the
  ratio to that floor (issue 13's target: within 3x; and >= 1M events/s);
- bulk ``EventStore.ingest`` of the same events as an Arrow table (the store's own floor);
- re-running the finished import (nothing new): target under 2 s at 10M events.

``kafka``: starts librdkafka's mock cluster (a real broker on 127.0.0.1, in a child process)
with a topic of one partition per 10,000 records (the mock keeps about 5 MB a partition and
drops older batches beyond it: 100 partitions at 1M records), produces the sample's events as records
(key: the stream id; value: JSON with the type, time and payload; headers: correlation and
causation id, actor; timestamp: the recorded time), then measures a bare ``confluent-kafka``
consume loop over the topic (every partition assigned from its start, each value touched: the
floor for "read the topic") and ``esa import`` of the topic into a new lake (issue 14's target:
>= 80% of the bare loop's rate).

``eventsourcing``: writes events with the ``eventsourcing`` library (an account aggregate's
events, made by its own aggregate methods, turned into its stored events by its own mapper and
inserted in bulk through its recorder's ``insert_events``) into its SQLite recorder and its
PostgreSQL recorder (a throwaway cluster from Debian's server binaries, started here as
tests/postgres.py does it), then for each measures ``esa import`` against the library reading
them back through its recorder API (``select_notifications`` pages, and the same decoded to
domain events by its mapper; issue 14's target: >= 10x) and against a plain ``SELECT`` of the
table into Arrow (ADBC for PostgreSQL, ``sqlite3`` ``fetchall`` for SQLite; target: within 3x).

Wall times depend on what else runs on the machine; the process's CPU seconds are reported
beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import pyarrow as pa
from eventsourcing.domain import Aggregate, event

import esanalytics as esa
from esanalytics.sample import SampleSpec, generate_chunks

_STEP = 500_000


def write_jsonl(path: Path, events: int) -> None:
    """The sample's events as JSON Lines, in the shape an export from another store has."""
    import duckdb

    total, chunk = generate_chunks(SampleSpec(events=events, seed=1))
    con = duckdb.connect()
    with open(path, "w", encoding="utf-8") as out:
        for start in range(0, total, _STEP):
            con.register("t", chunk(start, min(start + _STEP, total)))
            lines = con.sql(
                """SELECT '{"stream_id":' || to_json(stream_id) || ',"event_type":'
                   || to_json(event_type) || ',"occurred_at":"'
                   || strftime(timezone('UTC', occurred_at), '%Y-%m-%dT%H:%M:%S.%fZ')
                   || '","data":' || data || ',"metadata":' || metadata || '}' AS line
                   FROM t"""
            ).to_arrow_table()["line"]
            con.unregister("t")
            out.write("\n".join(lines.to_pylist()) + "\n")


def timed(action: Any) -> tuple[float, float, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench_file(events: int, work: Path) -> dict[str, Any]:
    """The JSON Lines part (see the module)."""
    source = work / f"events-{events}.jsonl"
    if not source.exists():
        print(f"writing {source} ...", flush=True)
        write_jsonl(source, events)
    results: dict[str, Any] = {"events": events, "file_mb": source.stat().st_size / 1e6}

    # -- the floor: DuckDB reads the JSON and writes Parquet -------------------------------
    import duckdb

    con = duckdb.connect()
    con.execute("SET threads = 2")
    target = work / "duckdb-floor.parquet"
    wall, cpu, _ = timed(
        lambda: con.execute(
            f"COPY (SELECT * FROM read_json('{source}', format='newline_delimited')) "
            f"TO '{target}' (FORMAT parquet)"
        )
    )
    results["duckdb_read_json_copy_s"] = wall
    results["duckdb_events_per_s"] = events / wall

    # -- esa import ------------------------------------------------------------------------
    lake = work / "lake"
    shutil.rmtree(lake, ignore_errors=True)
    wall, cpu, summary = timed(lambda: esa.import_events(lake, source, create=True))
    assert summary.events == events, summary
    results["import_s"] = wall
    results["import_cpu_s"] = cpu
    results["import_events_per_s"] = events / wall
    results["import_vs_duckdb_floor"] = wall / results["duckdb_read_json_copy_s"]
    # bounded memory: the process's peak so far (the import streams the file in 16 MB blocks)
    results["peak_rss_mb_after_import"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    # -- re-running the finished import: nothing new --------------------------------------
    wall, cpu, again = timed(lambda: esa.import_events(lake, source))
    assert again.events == 0, again
    results["rerun_nothing_new_s"] = wall

    # -- bulk ingest of the same events as Arrow tables ------------------------------------
    total, chunk = generate_chunks(SampleSpec(events=events, seed=1))
    tables = [chunk(s, min(s + 1_000_000, total)) for s in range(0, total, 1_000_000)]
    bulk = work / "bulk-lake"
    shutil.rmtree(bulk, ignore_errors=True)
    store = esa.open(bulk, create=True)

    def ingest_all() -> None:
        for table in tables:
            store.ingest(table)

    wall, cpu, _ = timed(ingest_all)
    results["ingest_s"] = wall
    results["ingest_events_per_s"] = events / wall
    results["import_vs_ingest"] = results["import_s"] / wall
    results["summary"] = (
        f"esa import: {results['import_events_per_s']:,.0f} events/s "
        f"({results['import_vs_duckdb_floor']:.1f}x DuckDB's read_json -> Parquet, target <= 3x; "
        f"target >= 1,000,000 events/s)\n"
        f"bulk ingest: {results['ingest_events_per_s']:,.0f} events/s (target >= 1,000,000)\n"
        f"re-run with nothing new: {results['rerun_nothing_new_s']:.2f} s (target < 2 s)"
    )
    return results


# -- Kafka ------------------------------------------------------------------------------------

# librdkafka's mock cluster in a child process, through librdkafka's C API (ctypes, as
# tests/kafka_broker.py does it), because a topic of more than the mock's default 4 partitions
# has no Kafka request the mock answers; it ends when its stdin closes.
_MOCK_BROKER = r"""
import ctypes, glob, os, sys
import confluent_kafka
here = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
lib = ctypes.CDLL(sorted(glob.glob(os.path.join(here, "confluent_kafka.libs", "librdkafka*.so*")))[0])
lib.rd_kafka_conf_new.restype = ctypes.c_void_p
lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
lib.rd_kafka_new.restype = ctypes.c_void_p
lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
lib.rd_kafka_mock_cluster_new.restype = ctypes.c_void_p
lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p
lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
errstr = ctypes.create_string_buffer(512)
conf = lib.rd_kafka_conf_new()
lib.rd_kafka_conf_set(conf, b"log_level", b"0", errstr, 512)
cluster = lib.rd_kafka_mock_cluster_new(lib.rd_kafka_new(0, conf, errstr, 512), 1)
if lib.rd_kafka_mock_topic_create(cluster, sys.argv[1].encode(), int(sys.argv[2]), 1):
    sys.exit("rd_kafka_mock_topic_create failed")
print(lib.rd_kafka_mock_cluster_bootstraps(cluster).decode(), flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def mock_broker(topic: str, partitions: int) -> Iterator[str]:
    """A Kafka broker on 127.0.0.1 (librdkafka's mock cluster in a child process) holding
    ``topic`` of ``partitions`` partitions: its bootstrap address; stopped on leaving."""
    child = subprocess.Popen(
        [sys.executable, "-c", _MOCK_BROKER, topic, str(partitions)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        bootstrap = child.stdout.readline().strip()
        if not bootstrap:
            raise RuntimeError(f"the mock cluster did not start (exit {child.wait()})")
        yield bootstrap.split(",")[0]
    finally:
        if child.stdin is not None:
            child.stdin.close()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def produce_sample(bootstrap: str, topic: str, events: int) -> int:
    """The sample's events as Kafka records (see the module); how many were produced."""
    import duckdb
    from confluent_kafka import Producer

    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10_000,
         "queue.buffering.max.messages": 1_000_000, "log_level": 0}
    )  # fmt: skip
    total, chunk = generate_chunks(SampleSpec(events=events, seed=1))
    con = duckdb.connect()
    count = 0
    for start in range(0, total, _STEP):
        con.register("t", chunk(start, min(start + _STEP, total)))
        rows = con.sql(
            """SELECT stream_id,
                      '{"event_type":' || to_json(event_type) || ',"occurred_at":"'
                      || strftime(timezone('UTC', occurred_at), '%Y-%m-%dT%H:%M:%S.%fZ')
                      || '","data":' || data || '}' AS value,
                      epoch_ms(recorded_at) AS ms,
                      metadata->>'$.correlation_id' AS correlation,
                      metadata->>'$.causation_id' AS causation,
                      metadata->>'$.actor' AS actor
               FROM t"""
        ).fetchall()
        con.unregister("t")
        for key, value, ms, correlation, causation, actor in rows:
            headers = [("correlation_id", correlation or ""), ("causation_id", causation or ""),
                       ("actor", actor or "")]  # fmt: skip
            while True:
                try:
                    producer.produce(topic, value, key, timestamp=ms, headers=headers)
                    break
                except BufferError:
                    producer.poll(0.05)
            count += 1
            if count % 10_000 == 0:
                producer.poll(0)
    left = producer.flush(120)
    if left:
        raise RuntimeError(f"{left} records not delivered")
    return count


def bare_consume(bootstrap: str, topic: str, *, fields: bool = False) -> tuple[int, int]:
    """A bare consume loop: every partition from its start to its high watermark, each
    value touched (with ``fields``, also the key, headers and timestamp taken, as an import
    needs them); (records, value bytes)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-bare", "enable.auto.commit": False,
         "log_level": 0}
    )  # fmt: skip
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            for p in partitions
        }
        if any(low for low, _ in marks.values()):
            raise RuntimeError("the broker dropped records (a partition's low watermark moved)")
        ends = {p: high for p, (_, high) in marks.items()}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions if ends[p]])
        todo = {p for p in partitions if ends[p]}
        records = size = 0
        while todo:
            for message in consumer.consume(10_000, 1.0):
                if message.error() is not None:
                    continue
                records += 1
                size += len(message.value() or b"")
                if fields:
                    message.key(), message.headers(), message.timestamp()
                if (message.offset() or 0) + 1 >= ends[message.partition()]:
                    todo.discard(message.partition())
        return records, size
    finally:
        consumer.close()


def bench_kafka(events: int, work: Path, partitions: int | None = None) -> dict[str, Any]:
    """The Kafka part (see the module)."""
    results: dict[str, Any] = {"events": events}
    topic = "bench-events"
    # The mock keeps about 5 MB a partition (older batches are dropped and the partition's low
    # watermark moves on): 10,000 records of ~280 bytes a partition stay well inside it.
    partitions = partitions or max(4, -(-events // 10_000))
    with mock_broker(topic, partitions) as bootstrap:
        wall, _, produced = timed(lambda: produce_sample(bootstrap, topic, events))
        assert produced == events
        results["setup_produce_s"] = wall
        results["partitions"] = partitions

        wall, cpu, (read, size) = timed(lambda: bare_consume(bootstrap, topic))
        assert read == events, (read, events)
        results["bare_consume_s"] = wall
        results["bare_consume_cpu_s"] = cpu
        results["bare_consume_records_per_s"] = events / wall
        results["value_mb"] = size / 1e6
        wall, cpu, (read, _) = timed(lambda: bare_consume(bootstrap, topic, fields=True))
        assert read == events, (read, events)
        results["bare_consume_all_fields_s"] = wall
        results["bare_consume_all_fields_cpu_s"] = cpu

        lake = work / "kafka-lake"
        shutil.rmtree(lake, ignore_errors=True)
        url = f"kafka://{bootstrap}/{topic}"
        wall, cpu, summary = timed(lambda: esa.import_events(lake, url, create=True))
        assert summary.events == events, summary
        results["import_s"] = wall
        results["import_cpu_s"] = cpu
        results["import_events_per_s"] = events / wall
        results["import_vs_bare_consume"] = results["bare_consume_s"] / wall

        # how many records had their recorded time raised (a batch ahead in time of another
        # partition's records): the merge by time across batches keeps this near 0
        from esanalytics.engine import Session

        with esa.open(lake) as store:
            raised = (
                Session(store)
                .sql(
                    "SELECT count(*) FROM events WHERE metadata->>'$.source_recorded_at' IS NOT NULL"
                )
                .fetchall()
            )
        results["recorded_times_raised"] = int(raised[0][0])

        wall, _, again = timed(lambda: esa.import_events(lake, url))
        assert again.events == 0, again
        results["rerun_nothing_new_s"] = wall
        shutil.rmtree(lake, ignore_errors=True)
    results["summary"] = (
        f"kafka: esa import {results['import_events_per_s']:,.0f} records/s, bare consume loop "
        f"{results['bare_consume_records_per_s']:,.0f} records/s: "
        f"{results['import_vs_bare_consume']:.0%} of it (target >= 80%)"
    )
    return results


# -- the eventsourcing library's recorders ------------------------------------------------


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A PostgreSQL cluster from Debian's server binaries on 127.0.0.1 at a free port, in a
    temporary folder (as tests/postgres.py starts it: a small copy; as root run by the
    postgres user, which must reach the folder): the URL of its ``postgres`` database for the
    trusted user ``esa``; stopped and removed on leaving."""
    import glob
    import pwd
    import socket

    given = os.environ.get("ESA_PG_BIN")
    found = (
        [str(Path(given) / "initdb")] if given else glob.glob("/usr/lib/postgresql/*/bin/initdb")
    )
    found = sorted(found, key=lambda f: int(p) if (p := Path(f).parents[1].name).isdigit() else 0)
    if not found or not Path(found[-1]).is_file():
        raise RuntimeError(
            "no PostgreSQL server binaries: apt-get install -y postgresql (or point ESA_PG_BIN "
            "at a folder holding initdb and pg_ctl)"
        )
    bin_ = Path(found[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="esa-bench-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"

    def run(*args: str) -> None:
        done = subprocess.run([str(bin_ / args[0]), *args[1:]], capture_output=True, text=True,
                              cwd=folder, timeout=120, **run_as)  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"{args[0]} failed:\n{done.stdout}\n{done.stderr}")

    try:
        run("initdb", "-D", str(data), "-U", "esa", "--auth=trust", "-E", "UTF8", "--locale=C",
            "--no-sync")  # fmt: skip
        options = (f"-h 127.0.0.1 -p {port} -k {folder} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c shared_buffers=256MB")  # fmt: skip
        run("pg_ctl", "start", "-D", str(data), "-w", "-t", "60", "-o", options,
            "-l", str(folder / "server.log"))  # fmt: skip
        yield f"postgresql://esa@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(Exception):
            run("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w")
        shutil.rmtree(folder, ignore_errors=True)


def _library_app(env: dict[str, str]) -> Any:
    """An ``eventsourcing`` application (named Bank: its PostgreSQL table is bank_events)
    over the store ``env`` describes, with its Account aggregate."""
    from eventsourcing.application import Application

    class Bank(Application[UUID]):
        """The application whose recorder and mapper write and read the events."""

    return Bank(env=env)


class Account(Aggregate):
    """A bank account of the ``eventsourcing`` part: opened, then deposits and withdrawals."""

    @event("Opened")
    def __init__(self, owner: str, currency: str) -> None:
        self.owner, self.currency, self.balance = owner, currency, Decimal("0.00")

    @event("Deposited")
    def deposit(self, amount: Decimal, correlation_id: UUID, note: str) -> None:
        self.balance += amount

    @event("Withdrawn")
    def withdraw(self, amount: Decimal, correlation_id: UUID, note: str) -> None:
        self.balance -= amount


def _library_events(count: int, seed: int = 1) -> Iterator[list[Any]]:
    """Domain events of bank accounts, made by the library's aggregate methods, in lists of
    up to 20,000 (one account's events together, 20 an account)."""
    rng = random.Random(seed)
    out: list[Any] = []
    made = 0
    while made < count:
        account = Account(f"customer-{made}", rng.choice(["EUR", "USD", "GBP"]))
        for _ in range(min(19, count - made - 1)):
            amount = Decimal(rng.randint(100, 90_000)) / 100
            correlation = UUID(int=rng.getrandbits(128))
            if rng.random() < 0.7:
                account.deposit(amount, correlation, rng.choice(["salary", "cash", "refund"]))
            else:
                account.withdraw(amount, correlation, rng.choice(["rent", "card", "atm"]))
        taken = account.collect_events()
        out.extend(taken)
        made += len(taken)
        if len(out) >= 20_000:
            yield out
            out = []
    if out:
        yield out


def write_library_stores(count: int, apps: list[Any]) -> None:
    """``count`` events into each application's recorder: made once, stored by each app's
    mapper, inserted in bulk through its recorder (``insert_events``)."""
    for chunk in _library_events(count):
        for app in apps:
            stored = [app.mapper.to_stored_event(e) for e in chunk]
            # (2,000 rows an insert: the PostgreSQL recorder sends an insert's rows in one psycopg
            # pipeline, and one of 20,000 rows once stalled for good, both ends waiting)
            for start in range(0, len(stored), 2_000):
                app.recorder.insert_events(stored[start : start + 2_000])


def read_with_recorder(app: Any, *, decode: bool = False) -> int:
    """The library reading its events back through its recorder API: pages of 10,000
    notifications (``select_notifications``), each decoded to a domain event by the
    application's mapper when ``decode``; how many were read."""
    start, read, limit = 1, 0, 10_000
    while True:
        page = app.recorder.select_notifications(start, limit)
        if decode:
            for notification in page:
                app.mapper.to_domain_event(notification)
        read += len(page)
        if len(page) < limit:
            return read
        start = page[-1].id + 1


def select_sqlite(path: Path) -> pa.Table:
    """A plain SELECT of the SQLite recorder's table into Arrow (sqlite3, fetchall)."""
    import sqlite3

    con = sqlite3.connect(path)
    try:
        rows = con.execute(
            "SELECT rowid, originator_id, originator_version, topic, state FROM stored_events "
            "ORDER BY rowid"
        ).fetchall()
    finally:
        con.close()
    names = ["notification_id", "originator_id", "originator_version", "topic", "state"]
    types = [pa.int64(), pa.string(), pa.int64(), pa.string(), pa.binary()]
    columns = zip(*rows, strict=True)
    return pa.table({n: pa.array(c, t) for n, c, t in zip(names, columns, types, strict=True)})


def select_postgres(url: str) -> pa.Table:
    """A plain SELECT of the PostgreSQL recorder's table into Arrow (ADBC)."""
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(url) as con, con.cursor() as cursor:
        cursor.execute(
            "SELECT notification_id, originator_id, originator_version, topic, state "
            "FROM bank_events ORDER BY notification_id"
        )
        table: pa.Table = cursor.fetch_arrow_table()
        return table


def _measure_store(
    kind: str, app: Any, url: str, select: Any, events: int, work: Path
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    wall, cpu, read = timed(lambda: read_with_recorder(app))
    assert read == events, (read, events)
    results["recorder_select_notifications_s"] = wall
    results["recorder_select_notifications_cpu_s"] = cpu
    results["recorder_events_per_s"] = events / wall
    wall, cpu, read = timed(lambda: read_with_recorder(app, decode=True))
    assert read == events
    results["recorder_and_mapper_s"] = wall
    results["recorder_and_mapper_cpu_s"] = cpu
    wall, cpu, table = timed(lambda: select(url if kind == "postgresql" else work / "es.sqlite"))
    assert table.num_rows == events
    results["plain_select_arrow_s"] = wall
    results["plain_select_arrow_cpu_s"] = cpu
    lake = work / f"es-{kind}-lake"
    shutil.rmtree(lake, ignore_errors=True)
    wall, cpu, summary = timed(lambda: esa.import_events(lake, url, create=True))
    assert summary.events == events, summary
    results["import_s"] = wall
    results["import_cpu_s"] = cpu
    results["import_events_per_s"] = events / wall
    results["import_vs_recorder"] = results["recorder_select_notifications_s"] / wall
    results["import_vs_recorder_and_mapper"] = results["recorder_and_mapper_s"] / wall
    results["import_vs_plain_select"] = wall / results["plain_select_arrow_s"]
    wall, _, again = timed(lambda: esa.import_events(lake, url))
    assert again.events == 0, again
    results["rerun_nothing_new_s"] = wall
    shutil.rmtree(lake, ignore_errors=True)
    return results


def bench_eventsourcing(events: int, work: Path) -> dict[str, Any]:
    """The eventsourcing part (see the module)."""
    results: dict[str, Any] = {"events": events}
    sqlite_path = work / "es.sqlite"
    sqlite_path.unlink(missing_ok=True)
    with throwaway_postgres() as server:
        import psycopg

        with psycopg.connect(server, autocommit=True) as con:
            con.execute("CREATE DATABASE bench")
        pg_url = server.rsplit("/", 1)[0] + "/bench"
        port = pg_url.split(":")[-1].split("/")[0]
        sqlite_app = _library_app(
            {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(sqlite_path)}
        )
        pg_app = _library_app(
            {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": "bench",
             "POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": port, "POSTGRES_USER": "esa",
             "POSTGRES_PASSWORD": ""}
        )  # fmt: skip
        try:
            wall, _, _ = timed(lambda: write_library_stores(events, [sqlite_app, pg_app]))
            results["setup_write_both_s"] = wall
            with psycopg.connect(pg_url, autocommit=True) as con:
                con.execute("VACUUM ANALYZE bank_events")
            for kind, app, url, select in (
                ("sqlite", sqlite_app, f"sqlite:///{sqlite_path}", select_sqlite),
                ("postgresql", pg_app, pg_url, select_postgres),
            ):
                measured = _measure_store(kind, app, url, select, events, work)
                results[kind] = measured
                print(f"  {kind}: {json.dumps(_rounded(measured))}", flush=True)
        finally:
            sqlite_app.close()
            pg_app.close()
    lines = []
    for kind in ("sqlite", "postgresql"):
        r = results[kind]
        lines.append(
            f"eventsourcing {kind}: esa import {r['import_events_per_s']:,.0f} events/s; "
            f"{r['import_vs_recorder']:.1f}x the recorder's select_notifications (target >= 10x; "
            f"{r['import_vs_recorder_and_mapper']:.1f}x with its mapper decoding); "
            f"{r['import_vs_plain_select']:.1f}x a plain SELECT into Arrow (target <= 3x)"
        )
    results["summary"] = "\n".join(lines)
    return results


def _rounded(results: dict[str, Any]) -> dict[str, Any]:
    return {
        k: round(v, 3) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v
        for k, v in results.items()
        if k != "summary"
    }


PARTS = {"file": (bench_file, 10_000_000), "kafka": (bench_kafka, 1_000_000),
         "eventsourcing": (bench_eventsourcing, 1_000_000)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=None, help="events in each part")
    parser.add_argument(
        "--only", default=",".join(PARTS), help=f"parts to run, of {', '.join(PARTS)}"
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="the Kafka topic's partitions (default: one per 10,000 records; the mock cluster "
        "keeps about 5 MB a partition)",
    )
    parser.add_argument("--dir", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}: use {', '.join(PARTS)}")
    work = Path(args.dir or tempfile.mkdtemp(prefix="esa-import-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for part in parts:
        bench, default = PARTS[part]
        print(f"-- {part} ...", flush=True)
        more = {"partitions": args.partitions} if part == "kafka" and args.partitions else {}
        results[part] = bench(args.events or default, work, **more)
        print(json.dumps(_rounded(results[part])), flush=True)
    print(json.dumps(_rounded(results), indent=2))
    print()
    for part in parts:
        print(results[part]["summary"])


if __name__ == "__main__":
    main()
