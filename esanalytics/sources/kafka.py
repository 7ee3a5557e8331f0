"""Kafka topics as an import source, through ``confluent-kafka`` (librdkafka).

The source is a URL::

    kafka://HOST:PORT[,HOST:PORT...]/TOPIC[,TOPIC...][?SETTING=VALUE&...]
    kafka://HOST:PORT/^orders-.*                  a regular expression (starts with ^)
    kafka://USER:PASSWORD@HOST:PORT/orders?security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512

A topic part starting with ``^`` is a regular expression searched in every topic name
(librdkafka's rule; internal topics starting with ``__`` are left out); percent-encode a
``?``, ``#`` or ``/`` in it. Query parameters are librdkafka settings, passed as they are
(``security.protocol``, ``ssl.ca.location``, ``sasl.mechanism``, ``client.id`` ...). A user and
password become ``sasl.username``/``sasl.password``, with ``security.protocol=SASL_SSL`` and
``sasl.mechanism=PLAIN`` unless given (a password is never sent in clear by default, nor shown:
messages and the lake name the source without it).

Reading. Partitions are read with an explicit ``assign()`` from the offsets in the import's
cursor; no consumer group is joined and nothing is committed to Kafka: the cursor committed in
the lake with the events is the truth. The cursor holds the cluster id, the topics as given,
and the next offset of every partition seen (an empty one too). One :meth:`KafkaSource.read`
reads up to the high watermarks it saw at its start (so an import without ``--follow`` ends
while producers go on writing; records of a transaction still open are left for a later
read: the reader is read_committed, librdkafka's default), in batches of up to ``batch_records`` records (or ``batch_bytes`` of values); ``--follow``
calls it again after each poll. A partition (or a topic matching the expression) that appears
later is read from its start. A stored offset below a partition's low watermark (records
deleted by retention or DeleteRecords before this import read them), or one beyond its end (a
topic deleted and made again), is an error naming the topic, partition and offsets, never a
silent skip; so is a topic made again with more records than were read, where the cluster
gives topic ids (Kafka 2.8 and later; the cursor keeps them). A broker that cannot be reached, or a topic that does not exist, is an error
within seconds (metadata calls with a timeout; librdkafka alone would retry forever); so are
brokers that all go away during a read (after ``DOWN_SECONDS``), the batches committed
before kept.

A record becomes one JSON object (its row; a row's place in messages is ``topic/partition@offset``)::

    {"topic": "orders", "partition": 2, "offset": 17, "record": "orders/2@17",
     "timestamp": "2025-03-01T09:30:00.123Z", "timestamp_type": "create",
     "key": "A-1", "headers": {"trace": "x"}, "value": {...the value, as it is...}}

``timestamp_type`` is ``create`` (the producer's time) or ``log_append`` (the broker's), as the
topic says; a record of the format before Kafka 0.10 has neither (both null: a bad row unless
``--recorded-at``/``--occurred-at`` name fields of the value). A key that is not UTF-8 is ``"key": null, "key_base64": "..."``; header values are
text (a repeated header name holds a list; values that are not UTF-8 go to
``headers_base64``). The value is embedded as it is (it is checked to be exactly one JSON
value, so a value cannot add fields to its row). A value that is not JSON (or not UTF-8
text) is a bad row, named by its place, with the value kept as ``value_text`` (or
``value_base64``) in the row written to the rejects file under ``--on-error skip``. A null
value (a tombstone: the key deleted, on a compacted topic) becomes an event of type
``Tombstoned`` with an empty payload, not an error.

Mapping (:meth:`KafkaSource.detect`; ``--map`` wins): the stream id is the key; the event type
is the first of the value's ``event_type``, ``eventType``, ``type`` and ``event`` it has (else
a header of one of the first three names, or ``ce_type``); the payload is the value, or ``value.data`` when the value is an
envelope: a ``data`` object beside its type and other attributes of the event only (ids,
times, stream, metadata, CloudEvents' attributes; a field of its own beside them makes the
whole value the payload, so nothing is dropped); the event id is the value's ``event_id`` or
``eventId`` (a CloudEvents value's ``id``), else the record's place (``record``, so the same
record read under another import name is the same event); ``recorded_at`` is the record's
timestamp; ``occurred_at`` is the value's ``occurred_at``, ``timestamp``, ``time`` ... if it has
one (a number there that would be a time before 2000 is no time: a duration, a counter),
else the record's timestamp; the headers are the metadata, with ``correlation_id`` and
``causation_id`` taken from the headers (or the value) where present.

Order in the lake: partitions are merged by their records' timestamps taken as a running
maximum along each partition (so one partition's records, which hold each key's events in
order, are never reordered, whatever its timestamps do), then by topic and partition, then
offset. The merge holds across batches as far as memory allows: a batch takes only the records
up to the *watermark*, the earliest of the latest timestamps read from each partition still
being read, and keeps the rest for the next batch (a partition that is behind in time is not
overtaken by one that is ahead); when more than four batches' worth of records wait, a
batch takes them all (:data:`HOLD_BATCHES`). Partitions are fetched in turns of 256 KB
(``max.partition.fetch.bytes``), so a backlog arrives interleaved. So a backlog read from many
partitions keeps its recorded times instead of having most of them raised to a later batch's
(the lake's recorded times never go back).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.exceptions import SourceChangedError, SourceError
from esanalytics.sources import mapping as _mapping
from esanalytics.sources.base import RawBatch
from esanalytics.sources.mapping import ImportMapping, TimeField

__all__ = ["KafkaBatch", "KafkaSource", "open_kafka_source"]

BATCH_RECORDS = 50_000
HOLD_BATCHES = 4  # records held back for the merge across batches: at most 4 batches' worth
BATCH_BYTES = 32 << 20  # a batch's keys and values (its rows take about 20 times as much)
METADATA_SECONDS = 10.0  # a broker that does not answer metadata in this long is unreachable
STALL_SECONDS = 60.0  # no record for this long while partitions are below their watermark
DOWN_SECONDS = METADATA_SECONDS  # no record for this long while every broker is unreachable
TOMBSTONE = "Tombstoned"
_EOF, _OUT_OF_RANGE, _AUTO_RESET = -191, 1, -140
_TRANSIENT = {-195, -187, -185}  # _TRANSPORT, _ALL_BROKERS_DOWN, _TIMED_OUT: retried
_DOWN = {-187}  # _ALL_BROKERS_DOWN: no broker to read from (one gone is -195: others may lead)
_SAMPLE_ROWS = 1000
_REFUSED = re.compile(r"refused|resolve|not known|no address|authentication|handshake", re.I)
_TYPE_NAMES = ("event_type", "eventType", "type", "event")
_HEADER_TYPES = ("event_type", "eventType", "type", "ce_type")
_ID_NAMES = ("event_id", "eventId")
_HEADER_IDS = ("event_id", "eventId", "ce_id")
_TIME_NAMES = _mapping.CANDIDATES["occurred_at"]
_YEAR_2000 = 946_684_800  # seconds from 1970: a smaller number in a time field is no time
# the fields an envelope may hold beside its data: the event's attributes (CloudEvents' too)
_ENVELOPE = frozenset(
    ("data", "id", "specversion", "source", "subject", "datacontenttype", "dataschema",
     "version", *_TYPE_NAMES, *(n for role in ("stream_id", "event_id", "occurred_at",
     "recorded_at", "metadata", "category", "schema_version")
     for n in _mapping.CANDIDATES[role]), *(n for names in _mapping.META_KEYS.values()
     for n in names))
)  # fmt: skip
_META = {"correlation_id": ("correlation_id", "correlationId", "ce_correlationid"),
         "causation_id": ("causation_id", "causationId", "ce_causationid")}  # fmt: skip


def _missing_client() -> SourceError:
    return SourceError(
        "Reading Kafka needs the confluent-kafka package, which is not installed.",
        hint="pip install 'esanalytics[kafka]' (or pip install confluent-kafka).",
        source=None,
        where=None,
    )


def open_kafka_source(
    url: str, *, batch_records: int = BATCH_RECORDS, batch_bytes: int = BATCH_BYTES
) -> KafkaSource:
    """The source a ``kafka://`` URL names (see the module for its form)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if not at:
        userinfo, hosts = "", netloc
    brokers = [h.strip() for h in hosts.split(",") if h.strip()]
    spec = unquote(parts.path.lstrip("/"))
    if not at and "@" in parts.path:  # (a user:password cut by a '/')
        raise SourceError(
            "The Kafka URL has an '@' after its host part: a user or password in it holds a "
            "'/' (the URL is not shown, so the password is not either).",
            hint="percent-encode those characters in the user and password (/ as %2F, ? as "
            "%3F, # as %23, @ as %40, : as %3A): kafka://USER:PASSWORD@HOST:PORT/TOPIC.",
            source=None,
            where=None,
        )
    if not brokers or not spec:
        raise SourceError(
            f"{_safe(url)} names no {'broker' if not brokers else 'topic'}.",
            hint="give kafka://HOST:PORT/TOPIC (several: kafka://H1:9092,H2:9092/orders,payments; "
            "a regular expression: kafka://HOST:PORT/^orders-.*).",
            source=None,
            where=None,
        )
    settings = dict(parse_qsl(parts.query, keep_blank_values=True))
    if userinfo:
        user, _, password = userinfo.partition(":")
        settings.setdefault("sasl.username", unquote(user))
        settings.setdefault("sasl.password", unquote(password))
        settings.setdefault("security.protocol", "SASL_SSL")
        if "sasl.mechanisms" not in settings:
            settings.setdefault("sasl.mechanism", "PLAIN")
    if spec.startswith("^"):
        try:
            re.compile(spec)
        except re.error as error:
            raise SourceError(
                f"The topic expression {spec!r} is not a regular expression: {error}.",
                hint="a topic part starting with ^ is a Python regular expression, e.g. "
                "kafka://HOST:PORT/^orders-.* (percent-encode ?, # and / in it).",
                source=None,
                where=None,
            ) from None
        topics: tuple[str, ...] = ()
        pattern: str | None = spec
    else:
        topics = tuple(t.strip() for t in spec.split(",") if t.strip())
        pattern = None
    return KafkaSource(brokers, topics, pattern=pattern, settings=settings,
                       batch_records=batch_records, batch_bytes=batch_bytes)  # fmt: skip


def _safe(url: str) -> str:
    """The URL without its password (in the user part or a setting)."""
    url = re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", url)
    return re.sub(r"((?:password|secret)=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


@dataclass(frozen=True)
class KafkaBatch(RawBatch):
    """A batch of Kafka records: also which rows are tombstones and the source's own reason a
    row is bad (a value that is not JSON), which win over the mapping's."""

    tombstones: np.ndarray[Any, Any] | None = None
    reasons: pa.Array | None = None


class _Log(logging.Handler):
    """librdkafka's log lines, kept (the last few, for error messages) instead of printed."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: deque[str] = deque(maxlen=20)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class KafkaSource:
    """Kafka topics (a list, or a regular expression) on one cluster. See the module for
    the URL, the rows, the cursor, the mapping and the order of events."""

    kind = "kafka"
    empty_hint = (
        "its partitions hold no records yet (or only records of a transaction still open): "
        "produce some, or run the import with --follow to wait for them."
    )

    def __init__(
        self,
        brokers: list[str],
        topics: tuple[str, ...] = (),
        *,
        pattern: str | None = None,
        settings: dict[str, str] | None = None,
        batch_records: int = BATCH_RECORDS,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        try:
            import confluent_kafka  # noqa: F401
        except ImportError:  # pragma: no cover (installed with the kafka extra)
            raise _missing_client() from None
        self.brokers = list(brokers)
        self.topics = tuple(topics)
        self.pattern = pattern
        self.settings = dict(settings or {})
        self.batch_records = batch_records
        self.hold_records = HOLD_BATCHES * batch_records
        self.batch_bytes = batch_bytes
        self.spec = pattern if pattern is not None else ",".join(self.topics)
        self.label = f"kafka://{','.join(self.brokers)}/{self.spec}"
        self._cluster: str | None = None
        self._down: float | None = None  # when librdkafka last said every broker is down
        self._controller = False  # whether the cluster names a controller (admin requests)
        self._ids: dict[str, str] = {}  # each topic's id, where the cluster gives them
        self._log = _Log()
        self._logger = logging.Logger("esanalytics.kafka")  # (its own: not kept by logging)
        self._logger.propagate = False
        self._logger.addHandler(self._log)
        self._logger.setLevel(logging.DEBUG)

    # -- what the importer asks ----------------------------------------------------------

    @property
    def identity(self) -> str:
        """The cluster's id and the topics as given: the same cluster reached through other
        brokers is the same source; another cluster is not."""
        if self._cluster is None:
            consumer = self._consumer()
            try:
                self._metadata(consumer)
            finally:
                consumer.close()
        return f"kafka://{self._cluster}/{self.spec}"

    def default_name(self) -> str:
        base = self.topics[0] if self.topics else re.sub(r"[^A-Za-z0-9._-]+", "", self.spec)
        base = base.strip("._-") or "kafka"
        return base[:100]

    def size(self) -> int | None:
        """Records held by the topics' partitions now (high minus low watermark)."""
        consumer = self._consumer()
        try:
            _, partitions = self._metadata(consumer)
            return sum(high - low for low, high in self._marks(consumer, partitions).values())
        finally:
            consumer.close()

    # -- the client ----------------------------------------------------------------------

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer, KafkaException

        config: dict[str, Any] = {
            "bootstrap.servers": ",".join(self.brokers),
            "group.id": "esanalytics-import",  # (never joined: partitions are assigned)
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "error",  # (records deleted under the reader: an error)
            # partitions fetched in turns of at most this much, so a backlog arrives
            # interleaved and the merge by time holds few records back (see the module)
            "max.partition.fetch.bytes": 262_144,
            "logger": self._logger,
            "error_cb": self._error,
            **self.settings,
        }
        try:
            return Consumer(config)
        except (KafkaException, ValueError, TypeError) as error:
            raise SourceError(
                f"The Kafka settings of {self.label} are not accepted: {_text(error)}.",
                hint="query parameters are librdkafka settings (see librdkafka's "
                "CONFIGURATION.md), e.g. ?security.protocol=SASL_SSL&sasl.mechanism=PLAIN.",
                source=None,
                where=None,
            ) from None

    def _answers(self, consumer: Any) -> bool:
        """Whether the cluster answers a metadata request within a few seconds."""
        from confluent_kafka import KafkaException

        try:
            consumer.list_topics(timeout=3)
        except KafkaException:
            return False
        return True

    def _error(self, error: Any) -> None:
        """librdkafka's client-wide errors (served by ``consume``): keeps when the brokers
        were last all unreachable."""
        if error.code() in _DOWN:
            self._down = time.monotonic()

    def _said(self) -> str:
        """librdkafka's last log lines, each once."""
        return "; ".join(dict.fromkeys(self._log.lines))

    def _unreachable(self, error: Any, waited: float) -> SourceError:
        said = self._said()
        where = ",".join(self.brokers)
        # the line that says why, without librdkafka's prefix ("FAIL [rdkafka#...] [thrd:...]: ")
        lines = [re.sub(r"^\w+ \[[^]]*\] \[[^]]*\]: (\S+: )?", "", x) for x in self._log.lines]
        login = [x for x in lines if re.search(r"SASL authentication|Authentication fail", x)]
        if login:
            user = self.settings.get("sasl.username")
            return SourceError(
                f"The Kafka cluster at {where} refused the login"
                + (f" of {user!r}" if user else "")
                + f": {login[-1].rstrip('.')}.",
                hint="check the user and password in the URL (kafka://USER:PASSWORD@HOST:PORT/"
                "TOPIC; percent-encode @, : and / in them) and the mechanism the cluster takes: "
                "?sasl.mechanism=SCRAM-SHA-512 (PLAIN by default), ?security.protocol="
                "SASL_PLAINTEXT for a cluster without TLS (SASL_SSL by default).",
                source=None,
                where=None,
            )
        tls = re.search(r"SASL|SSL|handshake", said, re.IGNORECASE)
        return SourceError(
            f"Could not reach the Kafka cluster at {where} (tried for {waited:.0f} s): "
            f"{_text(error)}" + (f" ({lines[-1].rstrip('.')})" if lines else "") + ".",
            hint="check the bootstrap address(es) (HOST:PORT, comma-separated) and that the "
            "brokers run and are reachable from here"
            + (
                "; the TLS or SASL handshake failed: check ?security.protocol= (SASL_SSL by "
                "default with a password in the URL) and ?sasl.mechanism="
                if tls
                else "; a cluster behind TLS or SASL needs ?security.protocol=SSL (or "
                "SASL_SSL) and its settings"
            )
            + ".",
            source=None,
            where=None,
        )

    def _metadata(self, consumer: Any) -> tuple[str, dict[str, list[int]]]:
        """The cluster id and the partitions of each topic this source reads (all topics
        named must exist; an expression must match one)."""
        from confluent_kafka import KafkaException

        started = time.monotonic()
        while True:  # (short looks: a refused connection or unknown host ends it early)
            try:
                metadata = consumer.list_topics(timeout=1.0)
                break
            except KafkaException as error:
                consumer.poll(0)  # (serves librdkafka's log lines to self._log)
                waited = time.monotonic() - started
                if waited > METADATA_SECONDS or (waited > 2 and _REFUSED.search(self._said())):
                    raise self._unreachable(error, waited) from None
        self._cluster = str(metadata.cluster_id or ",".join(sorted(self.brokers)))
        self._controller = metadata.controller_id in metadata.brokers
        held = {name: t for name, t in metadata.topics.items() if not t.error}
        if self.pattern is not None:
            expression = re.compile(self.pattern)
            names = sorted(n for n in held if not n.startswith("__") and expression.search(n))
        else:
            names = list(self.topics)
        missing = [n for n in names if n not in held]
        if missing or not names:
            known = sorted(n for n in held if not n.startswith("__"))
            shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
            what = (
                f"no topic matching {self.pattern}"
                if self.pattern is not None
                else f"no topic {', '.join(missing)}"
            )
            raise SourceError(
                f"The Kafka cluster at {','.join(self.brokers)} has {what} (its topics: "
                f"{shown or 'none'}).",
                hint="check the topic name (names are case-sensitive) and that this login may "
                "describe it; several topics: kafka://HOST:PORT/orders,payments; a regular "
                "expression: kafka://HOST:PORT/^orders-.*",
                source=None,
                where=None,
            )
        return self._cluster, {n: sorted(held[n].partitions) for n in names}

    def _topic_ids(self, names: list[str]) -> dict[str, str]:
        """Each topic's id (a topic deleted and made again under its name has another), for
        the topics whose id the cluster gives (none when it names no controller, as
        librdkafka's mock cluster does not)."""
        from confluent_kafka import KafkaException, TopicCollection
        from confluent_kafka.admin import AdminClient

        if not self._controller or not names:
            return {}
        config: dict[str, Any] = {"bootstrap.servers": ",".join(self.brokers),
                                  "logger": self._logger, **self.settings}  # fmt: skip
        admin = AdminClient(config)
        futures = admin.describe_topics(TopicCollection(names), request_timeout=METADATA_SECONDS)
        ids = {}
        for name, future in futures.items():
            try:
                found = future.result(timeout=METADATA_SECONDS)
            except KafkaException:  # (a cluster without topic ids: no check)
                continue
            if found.topic_id is not None:
                ids[name] = str(found.topic_id)
        return ids

    def _marks(
        self, consumer: Any, partitions: dict[str, list[int]]
    ) -> dict[tuple[str, int], tuple[int, int]]:
        from confluent_kafka import KafkaException, TopicPartition

        marks = {}
        for topic, numbers in partitions.items():
            for number in numbers:
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, number), timeout=METADATA_SECONDS
                    )
                except KafkaException as error:
                    raise self._unreachable(error, METADATA_SECONDS) from None
                marks[(topic, number)] = (int(low), int(high))
        return marks

    # -- reading -------------------------------------------------------------------------

    def read(
        self,
        at: dict[str, Any] | None,
        *,
        con: Any,
        follow: bool = False,
        name: str | None = None,
    ) -> Iterator[KafkaBatch]:
        """Batches of the records after the cursor ``at``, up to the high watermarks seen at
        the start of this call."""
        consumer = self._consumer()
        try:
            yield from self._read(consumer, at, con, name)
        finally:
            consumer.close()

    def _start(
        self, consumer: Any, at: dict[str, Any] | None, name: str | None
    ) -> tuple[dict[str, dict[str, int]], dict[tuple[str, int], tuple[int, int]]]:
        """Where each partition is read from, and its watermarks; refuses a cursor that does
        not fit the cluster (another cluster, records deleted before they were read, a
        partition shorter than what was read)."""
        cluster, partitions = self._metadata(consumer)
        stored: dict[str, dict[str, int]] = (at or {}).get("offsets", {})
        if at is not None and at.get("cluster") != cluster:
            raise _changed(
                self.label,
                f"its cluster id is {cluster}, and the import read the cluster {at.get('cluster')}",
                name=name,
            )
        gone = sorted(set(stored) - set(partitions))
        if gone:
            raise _changed(
                self.label, f"the topic {gone[0]} it read is not there any more", name=name
            )
        self._ids = self._topic_ids(sorted(partitions))
        known_ids: dict[str, str] = (at or {}).get("ids", {})
        for topic, now in sorted(self._ids.items()):
            if known_ids.get(topic, now) != now:
                raise _changed(
                    self.label,
                    f"the topic {topic} was deleted and made again (its id was "
                    f"{known_ids[topic]}, it is {now})",
                    name=name,
                )
        marks = self._marks(consumer, partitions)
        offsets: dict[str, dict[str, int]] = {}
        for (topic, number), (low, high) in sorted(marks.items()):
            known = stored.get(topic, {})
            if str(number) in known:
                start = int(known[str(number)])
            elif at is not None and low > 0:
                # a partition (or topic) that appeared after the last run, already trimmed
                start = 0
            else:
                start = low
            if start < low:
                raise SourceError(
                    f"{topic}/{number}: the records at offsets {start:,} to {low - 1:,} were "
                    f"deleted (retention or DeleteRecords) before this import read them; the "
                    f"partition now starts at offset {low:,}.",
                    hint="nothing was written. Those records are lost to this import: to go on "
                    "with what the topic holds now, import it under a new --name (records "
                    "already imported are recognised by their place and skipped); to keep up in "
                    "future, run the import more often than the topic's retention.ms, or keep "
                    "it running with --follow.",
                    source=name,
                    where=f"{topic}/{number}@{start}",
                )
            if start > high:
                raise _changed(
                    self.label,
                    f"{topic}/{number} ends at offset {high:,}, before the {start:,} already "
                    "imported (the topic was deleted and made again?)",
                    name=name,
                )
            offsets.setdefault(topic, {})[str(number)] = start
        return offsets, marks

    def _read(
        self, consumer: Any, at: dict[str, Any] | None, con: Any, name: str | None
    ) -> Iterator[KafkaBatch]:
        from confluent_kafka import TopicPartition

        offsets, marks = self._start(consumer, at, name)
        places = sorted(marks)  # (topic, partition) in order: a row's place index
        index = {place: i for i, place in enumerate(places)}
        low = np.array([marks[p][0] for p in places], dtype=np.int64)
        target = np.array([marks[p][1] for p in places], dtype=np.int64)
        position = np.array([offsets[t][str(n)] for t, n in places], dtype=np.int64)
        todo = {i for i in range(len(places)) if position[i] < target[i]}
        if not todo:
            return
        topic_names = sorted({t for t, _ in places})
        single = topic_names[0] if len(topic_names) == 1 else None
        consumer.assign([TopicPartition(*places[i], int(position[i])) for i in sorted(todo)])
        assigned = set(todo)
        pending: list[list[Any]] = []
        count = size = 0
        # each partition's running maximum timestamp over the records batches took so far
        taken = np.full(len(places), np.iinfo(np.int64).min, dtype=np.int64)
        last_seen = time.monotonic()
        while todo:
            messages = consumer.consume(min(self.batch_records, 10_000), 0.2)
            if not messages:
                quiet = time.monotonic() - last_seen
                if quiet > STALL_SECONDS:
                    raise self._stalled(places, todo, quiet, name)
                if quiet > DOWN_SECONDS and self._down is not None:
                    # every broker was said down (records fetched before may have come after
                    # that): ask the cluster once more, briefly
                    if not self._answers(consumer):
                        raise self._stalled(places, todo, quiet, name)
                    self._down = None
                continue
            last_seen = time.monotonic()
            good = [m for m in messages if m.error() is None]
            if len(good) < len(messages):
                for message in messages:
                    if message.error() is not None:
                        self._event(message, index, target, todo, name)
            for chunk, held in _by_bytes(good, self.batch_bytes - size, self.batch_bytes):
                count += self._take(chunk, single, index, target, todo, pending)
                size += held
                if size >= self.batch_bytes and pending:  # (bounded in memory: all go)
                    ready, _ = _up_to_watermark(pending, taken, todo, hold=False)
                    yield self._batch(con, ready, places, offsets, position, low)
                    pending, count, size = [], 0, 0
            if count >= self.batch_records or (not todo and count):
                ready, pending = _up_to_watermark(
                    pending, taken, todo, hold=bool(todo) and count < self.hold_records
                )
                count = sum(len(chunk[0]) for chunk in pending)
                size = sum(len(m) for chunk in pending for m in chunk[0])
                if ready:
                    yield self._batch(con, ready, places, offsets, position, low)
            self._pause(consumer, places, todo, assigned)

    def _take(
        self, good: list[Any], single: str | None, index: dict[tuple[str, int], int],
        target: Any, todo: set[int], pending: list[list[Any]],
    ) -> int:  # fmt: skip
        """Keep the records below their partition's target (those after it are the next
        read's), marking partitions read to their target; returns how many were kept."""
        if single is not None:
            where = [index[(single, p)] for p in [m.partition() for m in good]]
        else:
            where = [index[(m.topic(), m.partition())] for m in good]
        places_at = np.array(where, dtype=np.int64)
        numbers = np.array([m.offset() for m in good], dtype=np.int64)
        inside = numbers < target[places_at]
        if not inside.all():  # (records written after this read started: the next one's)
            keep = np.flatnonzero(inside)
            good = [good[i] for i in keep.tolist()]
            places_at, numbers = places_at[keep], numbers[keep]
        for i in np.unique(places_at[numbers + 1 >= target[places_at]]).tolist():
            todo.discard(int(i))
        for i in set(np.flatnonzero(~inside).tolist()):
            todo.discard(int(where[i]))
        if good:
            millis = np.fromiter((m.timestamp()[1] for m in good), dtype=np.int64, count=len(good))
            pending.append([good, places_at, numbers, millis])
        return len(good)

    def _pause(
        self, consumer: Any, places: list[tuple[str, int]], todo: set[int], assigned: set[int]
    ) -> None:
        """Stop fetching partitions read to their target (others go on)."""
        from confluent_kafka import TopicPartition

        done = assigned - todo
        if done:
            consumer.incremental_unassign([TopicPartition(*places[i]) for i in sorted(done)])
            assigned -= done

    def _event(
        self, message: Any, index: dict[tuple[str, int], int], target: Any, todo: set[int],
        name: str | None,
    ) -> None:  # fmt: skip
        error = message.error()
        code = error.code()
        place = (message.topic(), message.partition())
        if code == _EOF:  # the end the broker lets this reader see now: the watermark, or
            # before it the start of a transaction still open (read_committed): done for now
            i = index.get(place)
            if i is not None:
                todo.discard(i)
            return
        if code in _TRANSIENT and not error.fatal():
            return
        if code in (_OUT_OF_RANGE, _AUTO_RESET):
            raise SourceError(
                f"{place[0]}/{place[1]}: records were deleted (retention or DeleteRecords) "
                f"while this import read them: {_text(error)}.",
                hint="nothing of this batch was written. Run the import again: it stops with "
                "the offsets lost, and says how to go on.",
                source=name,
                where=f"{place[0]}/{place[1]}",
            )
        raise SourceError(
            f"Kafka refused to read {place[0]}/{place[1]}: {_text(error)}.",
            hint="check that this login may read the topic (ACLs) and that the cluster is "
            "healthy, then run the import again: it continues after the last committed batch.",
            source=name,
            where=f"{place[0]}/{place[1]}",
        )

    def _stalled(
        self, places: list[tuple[str, int]], todo: set[int], quiet: float, name: str | None
    ) -> SourceError:
        first = places[min(todo)]
        said = "; ".join(dict.fromkeys(self._log.lines))[:400]
        return SourceError(
            f"The Kafka cluster at {','.join(self.brokers)} sent no record of {first[0]}/"
            f"{first[1]} (and {len(todo) - 1} more partitions below their end) for "
            f"{quiet:.0f} s" + (f" (librdkafka: {said})" if said else "") + ".",
            hint="check that the brokers run and that this login may read the topics, then run "
            "the import again: it continues after the last committed batch.",
            source=name,
            where=f"{first[0]}/{first[1]}",
        )

    def _batch(
        self,
        con: Any,
        pending: list[list[Any]],
        places: list[tuple[str, int]],
        offsets: dict[str, dict[str, int]],
        position: Any,
        low: Any,
    ) -> KafkaBatch:
        """The rows of the records read, in the lake's order, with the cursor after them."""
        messages: list[Any] = [m for chunk in pending for m in chunk[0]]
        where = np.concatenate([chunk[1] for chunk in pending])
        numbers = np.concatenate([chunk[2] for chunk in pending])
        stamps = [m.timestamp() for m in messages]
        kinds = np.fromiter((s[0] for s in stamps), dtype=np.int8, count=len(stamps))
        millis = np.fromiter((s[1] for s in stamps), dtype=np.int64, count=len(stamps))
        keys, keys_b64 = _texts([m.key() for m in messages])
        values, values_b64 = _texts([m.value() for m in messages])
        headers = [m.headers() for m in messages]
        if any(h is not None for h in headers):
            pairs = [_headers(h) for h in headers]
            head = pa.array([p[0] for p in pairs], pa.large_string())
            head_b64 = pa.array([p[1] for p in pairs], pa.large_string())
        else:
            head = head_b64 = pa.nulls(len(messages), pa.large_string())
        topic_of = np.array([t for t, _ in places], dtype=object)
        part_of = np.array([p for _, p in places], dtype=np.int64)
        table = pa.table(
            {
                "topic": pa.array(topic_of[where], pa.large_string()),
                "part": pa.array(part_of[where]),
                "off": pa.array(numbers),
                "ts": pa.array(millis),
                "kind": pa.array(kinds),
                "k": keys,
                "k64": keys_b64,
                "h": head,
                "h64": head_b64,
                "v": values,
                "v64": values_b64,
            }
        ).take(pa.array(_lake_order(where, numbers, millis)))
        con.register("kafka_records", table)
        try:
            out = con.sql(_ROWS).to_arrow_table()
        finally:
            con.unregister("kafka_records")
        # the cursor: each partition's next offset after the last record of the batch
        np.maximum.at(position, where, numbers + 1)
        for i, (topic, number) in enumerate(places):
            offsets[topic][str(number)] = int(position[i])
        cursor: dict[str, Any] = {
            "cluster": self._cluster,
            "topics": self.spec,
            "offsets": {t: dict(p) for t, p in offsets.items()},
        }
        if self._ids:
            cursor["ids"] = dict(self._ids)
        reasons = out["reason"].combine_chunks()
        return KafkaBatch(
            lines=out["line"].combine_chunks(),
            at=out["at"].combine_chunks(),
            cursor=cursor,
            done=int((position - low).sum()),
            tombstones=out["tombstone"].to_numpy(zero_copy_only=False),
            reasons=reasons if reasons.null_count < len(reasons) else None,
        )

    # -- the mapping ---------------------------------------------------------------------

    def detect(self, given: ImportMapping, raw: RawBatch) -> ImportMapping:
        """``given`` completed from the first batch's records (see the module)."""
        rows = []
        for text in raw.lines.slice(0, _SAMPLE_ROWS).to_pylist():
            try:
                row = json.loads(text) if text is not None else None
            except (ValueError, RecursionError):
                continue
            if isinstance(row, dict):
                rows.append(row)
        values = [r["value"] for r in rows if isinstance(r.get("value"), dict)]
        headers = [r["headers"] for r in rows if isinstance(r.get("headers"), dict)]

        def first(objects: list[dict[str, Any]], names: tuple[str, ...]) -> str | None:
            present = {key for obj in objects for key in obj}
            found = [n for n in names if n in present]
            return found[0] if found else None

        def sample(objects: list[dict[str, Any]], key: str) -> Any:
            return next((o[key] for o in objects if o.get(key) is not None), None)

        fields = dict(given.fields)
        if "stream_id" not in fields:
            if not any(r.get("key") is not None or r.get("key_base64") for r in rows):
                raise SourceError(
                    f"The records of {self.label} have no key, which would be the stream id.",
                    hint="say where the stream id is: --map stream_id=value.FIELD (e.g. "
                    "value.order_id) or --map stream_id=headers.NAME.",
                    source=None,
                    where=None,
                )
            fields["stream_id"] = "key"
        if "event_type" not in fields:
            found = first(values, _TYPE_NAMES)
            header = first(headers, _HEADER_TYPES)
            if found is not None:
                fields["event_type"] = f"value.{found}"
            elif header is not None:
                fields["event_type"] = f"headers.{header}"
            elif values or headers:
                shown = sorted({k for v in values for k in v})[:20]
                raise SourceError(
                    f"The records of {self.label} have no field for the event type (value "
                    f"fields: {', '.join(shown) or 'none'}; headers: "
                    f"{', '.join(sorted({k for h in headers for k in h})[:20]) or 'none'}).",
                    hint="map one: --map event_type=value.FIELD or --map event_type=headers.NAME.",
                    source=None,
                    where=None,
                )
            else:  # (tombstones or bad values only: the type of a valid value, when one comes)
                fields["event_type"] = f"value.{_TYPE_NAMES[2]}"
        type_key = fields["event_type"].removeprefix("value.")
        if "data" not in fields:
            # an envelope holds nothing but its data and attributes of the event: a value with
            # fields of its own beside a data field is the payload (none of it dropped)
            envelope = any(
                isinstance(v.get("data"), dict) and type_key in v for v in values
            ) and all(
                isinstance(v.get("data"), dict) and set(v) <= _ENVELOPE | {type_key}
                for v in values
                if type_key in v
            )
            fields["data"] = "value.data" if envelope else "value"
        if "event_id" not in fields:
            cloud = any("specversion" in v and "id" in v for v in values)
            found = first(values, _ID_NAMES)
            header = first(headers, _HEADER_IDS)
            fields["event_id"] = (
                "value.id"
                if cloud
                else f"value.{found}"
                if found
                else f"headers.{header}"
                if header
                else "record"
            )
        if "metadata" not in fields:
            fields["metadata"] = "headers"
        for key, names in _META.items():
            role = f"metadata.{key}"
            if role in fields:
                continue
            header, found = first(headers, names), first(values, names)
            if header is not None:
                fields[role] = f"headers.{header}"
            elif found is not None:
                fields[role] = f"value.{found}"
        occurred = given.occurred_at
        if occurred is None or occurred.format == "iso":
            path = occurred.path if occurred is not None else None
            if path is None:  # (a number that would be a time before 2000 is none: a lap time)
                present = {key for obj in values for key in obj}
                found = next((n for n in _TIME_NAMES if n in present and not any(
                    isinstance(v.get(n), int | float) and not isinstance(v.get(n), bool)
                    and abs(v[n]) < _YEAR_2000 for v in values)), None)  # fmt: skip
                path = f"value.{found}" if found else "timestamp"
            top = path.removeprefix("value.")
            guess = _mapping._time_field(
                path, {path: sample(values, top) if path.startswith("value.") else None}
            )
            occurred = guess
        recorded = given.recorded_at or TimeField("timestamp")
        return ImportMapping(
            fields=fields, occurred_at=occurred, recorded_at=recorded, zone=given.zone
        )

    def settle(self, raw: RawBatch, mapped: pa.Table) -> pa.Table:
        """The mapped batch with the source's own reasons (a value that is not JSON) and its
        tombstones (type :data:`TOMBSTONE`, an empty payload) in place."""
        if not isinstance(raw, KafkaBatch):
            return mapped
        reason = mapped["reason"]
        if raw.tombstones is not None and raw.tombstones.any():
            tomb = pa.array(raw.tombstones)
            fixable = pc.or_kleene(
                pc.is_null(reason),
                pc.match_substring_regex(
                    reason, r"^(no event type|no payload|the payload .* is not a JSON object)"
                ),
            )
            untyped = pc.and_(tomb, pc.is_null(mapped["event_type"]))
            mapped = _set(mapped, "event_type",
                          pc.if_else(untyped, TOMBSTONE, mapped["event_type"]))  # fmt: skip
            mapped = _set(mapped, "data", pc.if_else(tomb, "{}", mapped["data"]))
            occurred = pc.if_else(
                pc.and_(tomb, pc.is_null(mapped["occurred_us"])),
                mapped["recorded_us"],
                mapped["occurred_us"],
            )
            mapped = _set(mapped, "occurred_us", occurred)
            reason = pc.if_else(pc.and_(tomb, pc.fill_null(fixable, False)), None, reason)
        if raw.reasons is not None:
            reason = pc.coalesce(raw.reasons.cast(reason.type), reason)
        return _set(mapped, "reason", reason)


def _set(table: pa.Table, column: str, values: Any) -> pa.Table:
    i = table.column_names.index(column)
    return table.set_column(i, column, values)


def _changed(label: str, what: str, *, name: str | None) -> SourceChangedError:
    return SourceChangedError(
        f"The source {label} is not the one the import's cursor was made on: {what}.",
        hint="point at the cluster and topics the import read (see esa info LAKE). Another "
        "cluster, or a topic made again, is another source whose records reuse the old "
        "places (topic/partition@offset): import it into a new lake, or, when its values "
        "carry event ids of their own, under a new --name (records already imported are "
        "then recognised by their ids and skipped).",
        source=name,
        where=None,
    )


def _text(error: Any) -> str:
    inner = error.args[0] if getattr(error, "args", None) else error
    text = inner.str() if hasattr(inner, "str") else str(inner)
    return str(text).rstrip(".")


def _up_to_watermark(
    pending: list[list[Any]], taken: Any, todo: set[int], *, hold: bool
) -> tuple[list[list[Any]], list[list[Any]]]:
    """Split the records read into those a batch takes now and those it holds back: with
    ``hold``, a record goes only when its running-maximum timestamp is at most the watermark
    (the earliest of the partitions still being read's latest timestamps), so a batch never
    takes a record ahead in time of one another partition has yet to hand over. ``taken``
    (each partition's running maximum over the records batches took) is updated."""
    where = np.concatenate([chunk[1] for chunk in pending])
    numbers = np.concatenate([chunk[2] for chunk in pending])
    millis = np.concatenate([chunk[3] for chunk in pending])
    # running maximum along each partition, starting from what earlier batches took
    order = np.lexsort((numbers, where))
    running = millis[order].copy()
    places = where[order]
    starts = np.r_[0, np.flatnonzero(np.diff(places)) + 1]
    for begin, end in zip(starts, np.r_[starts[1:], len(running)], strict=True):
        part = int(places[begin])
        running[begin:end] = np.maximum.accumulate(
            np.maximum(running[begin:end], np.int64(taken[part]))
        )
    key = np.empty_like(running)
    key[order] = running
    latest = taken.copy()
    np.maximum.at(latest, where, key)
    go = key <= min(int(latest[i]) for i in todo) if hold else np.ones(len(key), dtype=bool)
    np.maximum.at(taken, where[go], key[go])
    if go.all():
        return pending, []
    ready: list[list[Any]] = []
    held: list[list[Any]] = []
    start = 0
    for chunk in pending:
        size = len(chunk[0])
        take = go[start : start + size]
        start += size
        for target, mask in ((ready, take), (held, ~take)):
            if mask.any():
                rows = np.flatnonzero(mask)
                target.append([
                    [chunk[0][i] for i in rows.tolist()],
                    chunk[1][rows], chunk[2][rows], chunk[3][rows],
                ])  # fmt: skip
    return ready, held


def _by_bytes(good: list[Any], room: int, full: int) -> list[tuple[list[Any], int]]:
    """The records in runs of their values' bytes: the first up to ``room``, the others up
    to ``full`` each (a run ends with the record that reaches its bound), with their bytes."""
    sizes = [len(m) for m in good]  # (a message's len is its value's)
    if sum(sizes) < room:
        return [(good, sum(sizes))] if good else []
    runs: list[tuple[list[Any], int]] = []
    run: list[Any] = []
    held, bound = 0, room
    for message, size in zip(good, sizes, strict=True):
        run.append(message)
        held += size
        if held >= bound:
            runs.append((run, held))
            run, held, bound = [], 0, full
    if run:
        runs.append((run, held))
    return runs


def _lake_order(where: Any, numbers: Any, millis: Any) -> Any:
    """Rows in the lake's order: partitions merged by the running maximum of their
    timestamps, then by topic and partition, then offset."""
    by_place = np.lexsort((numbers, where))
    running = millis[by_place].copy()
    places = where[by_place]
    cuts = np.flatnonzero(np.diff(places)) + 1
    for segment in np.split(np.arange(len(running)), cuts):
        if len(segment):
            running[segment] = np.maximum.accumulate(running[segment])
    merged = np.empty_like(running)
    merged[by_place] = running
    return np.lexsort((numbers, where, merged))


def _texts(items: list[bytes | None]) -> tuple[pa.Array, pa.Array]:
    """Byte strings as text, and the base64 of those that are not UTF-8 (null elsewhere)."""
    binary = pa.array(items, pa.large_binary())
    try:
        return binary.cast(pa.large_string()), pa.nulls(len(items), pa.large_string())
    except pa.ArrowInvalid:
        texts: list[str | None] = []
        coded: list[str | None] = []
        for item in items:
            try:
                texts.append(None if item is None else item.decode("utf-8"))
                coded.append(None)
            except UnicodeDecodeError:
                texts.append(None)
                coded.append(base64.b64encode(item).decode("ascii"))  # type: ignore[arg-type]
        return pa.array(texts, pa.large_string()), pa.array(coded, pa.large_string())


def _headers(items: list[tuple[str, bytes | None]] | None) -> tuple[str | None, str | None]:
    """A record's headers as a JSON object of text (a repeated name: a list), and one of the
    base64 of the values that are not UTF-8 (or None)."""
    if not items:
        return None, None
    text: dict[str, Any] = {}
    coded: dict[str, Any] = {}
    for name, value in items:
        try:
            into, item = text, None if value is None else value.decode("utf-8")
        except UnicodeDecodeError:
            into, item = coded, base64.b64encode(value).decode("ascii")  # type: ignore[arg-type]
        if name in into:
            into[name] = [*into[name], item] if isinstance(into[name], list) else [into[name], item]
        else:
            into[name] = item
    return (
        json.dumps(text, ensure_ascii=False, separators=(",", ":")),
        json.dumps(coded, separators=(",", ":")) if coded else None,
    )


# The rows of a batch of records (kafka_records, in the lake's order): each row's JSON object
# text (the value embedded as it is once it is checked to be exactly one JSON value), its
# place, whether it is a tombstone, and the source's reason when the value is not JSON. (One
# concat() per row: a chain of || copies the growing text at each step, twice as slow.)
_ROWS = r"""
SELECT concat('{"topic":', to_json(topic), ',"partition":', part, ',"offset":', off,
              ',"record":"', place, '","timestamp":',
              CASE WHEN kind IN (1, 2) AND ts >= 0 THEN concat('"', strftime(epoch_ms(ts), '%Y-%m-%dT%H:%M:%S.%gZ'), '"')
                   ELSE 'null' END,
              ',"timestamp_type":', CASE kind WHEN 1 THEN '"create"' WHEN 2 THEN '"log_append"'
                                    ELSE 'null' END,
              ',"key":', coalesce(to_json(k), 'null'),
              CASE WHEN k64 IS NOT NULL THEN concat(',"key_base64":"', k64, '"') END,
              ',"headers":', coalesce(h, '{}'),
              CASE WHEN h64 IS NOT NULL THEN concat(',"headers_base64":', h64) END,
              ',"value":',
              CASE WHEN v64 IS NOT NULL THEN concat('null,"value_base64":"', v64, '"')
                   WHEN v IS NULL THEN 'null'
                   WHEN good THEN v
                   ELSE concat('null,"value_text":', to_json(v)) END,
              '}') AS line,
       place AS at,
       v IS NULL AND v64 IS NULL AS tombstone,
       CASE WHEN v64 IS NOT NULL
            THEN concat('the value is not UTF-8 text (', length(v64) * 3 // 4
                 - (length(v64) - length(rtrim(v64, '='))), ' bytes of ',
                 'another format: Avro, Protobuf?); esa imports JSON values')
            WHEN v IS NOT NULL AND NOT good
            THEN concat('the value is not JSON: ', to_json(left(v, 60))) END AS reason
FROM (SELECT *, coalesce(json_valid(v), false) AS good,
             concat(topic, '/', part, '@', off) AS place FROM kafka_records)
"""
