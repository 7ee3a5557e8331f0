"""Deciders: the write side's model, and the codec that maps typed events to the event record.

A decider is three things (Jérémie Chassaing's pattern, as in Axon's or Marten's aggregates
without the classes): an initial state, ``evolve(state, event) -> state`` and
``decide(command, state) -> events`` that raises :class:`CommandRejected` for an invalid
command. Commands and events are frozen dataclasses; the :class:`EventCodec` maps events to
``(event_type, schema_version, JSON data)`` and back, lifting old schema versions with
upcasters on the way in.

>>> from dataclasses import dataclass
>>> @dataclass(frozen=True)
... class Add:
...     n: int
>>> @dataclass(frozen=True)
... class Added:
...     n: int
>>> counter = Decider(
...     name="counter", version=1, initial=0,
...     evolve=lambda total, e: total + e.n,
...     decide=lambda c, total: [Added(c.n)],
...     codec=EventCodec([Added]),
... )
>>> counter.fold([Added(2), Added(3)])
5
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from esanalytics.domain.duties import SegregationRule
from esanalytics.events import RecordedEvent
from esanalytics.exceptions import EsaError, UnknownEventTypeError, ValidationError

__all__ = ["CommandRejected", "Decider", "EventCodec", "Upcaster"]

S = TypeVar("S")

_FLAT = (str, int, float, bool, type(None))

#: Lifts one event type's payload from schema version ``n`` to ``n + 1``.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class CommandRejected(ValidationError):
    """The aggregate refused the command (a business rule); nothing was written.

    ``rule`` names the rule, for callers that branch on it.
    """

    rule: str

    def __init__(self, problem: str, *, rule: str, hint: str | None = None) -> None:
        super().__init__(problem, hint=hint, rule=rule)


@dataclass
class EventCodec:
    """Typed events to and from the record: the class name is the event type (override with
    ``names``), ``schema_versions`` gives the current version per type (default 1), and
    ``upcasters[(type, n)]`` lifts a stored v``n`` payload to v``n+1``. ``unknown`` says what
    to do with a stored type this codec does not know: ``"error"`` (default) or ``"skip"``."""

    event_classes: Sequence[type]
    names: Mapping[type, str] = field(default_factory=dict)
    schema_versions: Mapping[str, int] = field(default_factory=dict)
    upcasters: Mapping[tuple[str, int], Upcaster] = field(default_factory=dict)
    unknown: Literal["error", "skip"] = "error"
    #: The same lifts for SQL users: a DuckDB expression over ``data`` (JSON text) per
    #: ``(type, version)``, used by :meth:`esanalytics.engine.Session.register_codec`.
    sql_upcasters: Mapping[tuple[str, int], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._by_name = {self.type_name(cls): cls for cls in self.event_classes}
        self._fields: dict[type, tuple[str, ...]] = {}
        for (name, version), _ in self.upcasters.items():
            current = self.schema_versions.get(name, 1)
            if not 1 <= version < current:
                raise EsaError(
                    f"An upcaster lifts {name} v{version}, but its current schema version is {current}.",
                    hint="set schema_versions[name] to the newest version; upcasters lift v1..v(n-1).",
                )

    def upcast_sql(self) -> str:
        """A SQL expression giving each event's data lifted to its type's current schema
        (the chain of ``sql_upcasters``), for a relation with ``event_type``,
        ``schema_version`` and ``data`` columns."""
        cases = []
        for name, current in sorted(self.schema_versions.items()):
            for stored in range(1, current):
                expression = "data"
                for version in range(stored, current):
                    lift = self.sql_upcasters.get((name, version))
                    if lift is None:
                        raise UnknownEventTypeError(
                            f"No SQL upcaster lifts {name} v{version} to v{version + 1}.",
                            hint=f"register sql_upcasters[({name!r}, {version})] beside the Python one.",
                            event_type=name,
                        )
                    expression = lift.replace("data", f"({expression})")
                quoted = name.replace("'", "''")
                cases.append(
                    f"WHEN event_type = '{quoted}' AND schema_version = {stored} "
                    f"THEN CAST({expression} AS VARCHAR)"
                )
        return f"CASE {' '.join(cases)} ELSE data END" if cases else "data"

    def type_name(self, cls: type) -> str:
        return self.names.get(cls, cls.__name__)

    def encode(self, event: Any) -> tuple[str, int, dict[str, Any]]:
        """``(event_type, schema_version, data)`` of a typed event."""
        name = self.type_name(type(event))
        if name not in self._by_name:
            raise UnknownEventTypeError(
                f"{type(event).__name__} is not an event of this codec.",
                hint="add its class to EventCodec(event_classes=[...]).",
                event_type=name,
            )
        fields = self._fields.get(type(event))
        if fields is None:
            fields = self._fields[type(event)] = tuple(f.name for f in dataclasses.fields(event))
        data = {name: getattr(event, name) for name in fields}
        if not all(isinstance(v, _FLAT) for v in data.values()):
            data = dataclasses.asdict(event)  # nested dataclasses, lists or dicts: copy deep
        return name, self.schema_versions.get(name, 1), data

    def decode(self, event_type: str, schema_version: int, data: dict[str, Any]) -> Any | None:
        """The typed event of a stored one, upcast to the current schema (None if skipped)."""
        cls = self._by_name.get(event_type)
        if cls is None:
            if self.unknown == "skip":
                return None
            raise UnknownEventTypeError(
                f"The log holds a {event_type!r} event, which this codec does not know.",
                hint="add its class to the codec, or pass unknown='skip' to fold past such "
                "events deliberately.",
                event_type=event_type,
            )
        current = self.schema_versions.get(event_type, 1)
        if schema_version > current:
            raise UnknownEventTypeError(
                f"The log holds {event_type} v{schema_version}; this code knows up to v{current}.",
                hint="the log was written by newer code: upgrade before reading it.",
                event_type=event_type,
            )
        for version in range(schema_version, current):
            lift = self.upcasters.get((event_type, version))
            if lift is None:
                raise UnknownEventTypeError(
                    f"No upcaster lifts {event_type} v{version} to v{version + 1}.",
                    hint=f"register upcasters[({event_type!r}, {version})].",
                    event_type=event_type,
                )
            data = lift(data)
        return cls(**data)

    def decode_record(self, event: RecordedEvent) -> Any | None:
        return self.decode(event.event_type, event.schema_version, event.data)


@dataclass
class Decider(Generic[S]):
    """One aggregate kind. ``version`` is the version of this code's state shape: a snapshot
    taken by another version is ignored, never misread. ``category`` is the stream prefix
    (``account`` for ``account-42``). ``to_snapshot``/``from_snapshot`` turn the state into
    JSON-able data and back (defaults suit dataclass and plain JSON states)."""

    name: str
    version: int
    initial: S
    evolve: Callable[[S, Any], S]
    decide: Callable[[Any, S], Sequence[Any]]
    codec: EventCodec
    category: str | None = None
    to_snapshot: Callable[[S], Any] | None = None
    from_snapshot: Callable[[Any], S] | None = None
    #: Pairs of steps of one entity the same actor must not both do (audited, not enforced).
    segregation: Sequence[SegregationRule] = ()

    def fold(self, events: Iterable[Any], state: S | None = None) -> S:
        """The state after ``events`` (typed), from ``state`` or the initial state."""
        current = self.initial if state is None else state
        for event in events:
            if event is not None:
                current = self.evolve(current, event)
        return current

    def snapshot_of(self, state: S) -> str:
        data = self.to_snapshot(state) if self.to_snapshot else _plain(state)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def state_from(self, text: str) -> S:
        data = json.loads(text)
        if self.from_snapshot is not None:
            return self.from_snapshot(data)
        if dataclasses.is_dataclass(self.initial) and isinstance(data, dict):
            state_type: Any = type(self.initial)
            state: S = state_type(**data)
            return state
        result: S = data
        return result


def _plain(state: Any) -> Any:
    if dataclasses.is_dataclass(state) and not isinstance(state, type):
        return dataclasses.asdict(state)
    return state
