"""How a source's rows become events: which field is the stream id, the type, the times.

Every source hands over its rows as JSON objects (one text per row, see
:mod:`esanalytics.sources.base`), so one mapping serves JSON Lines, CSV and Parquet alike. A
mapping names, for each part of the event record, a field path (``account.id``), a template
(``account-{account_id}``) or nothing; :func:`detect` fills what the user left out from the
names common exports use, and refuses a guess between two. :func:`apply` then turns a batch
into an ingest table in one DuckDB query, with a reason for every row it cannot use.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from esanalytics.exceptions import SourceError

__all__ = ["ImportMapping", "TimeField", "apply", "detect"]

# The names exports commonly give each part of an event. The first is the canonical name and
# wins outright; two of the others at once are ambiguous.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "stream_id": ("stream_id", "streamId", "stream", "aggregate_id", "aggregateId",
                  "entity_id", "entityId"),
    "event_type": ("event_type", "eventType", "type", "event"),
    "event_id": ("event_id", "eventId", "id", "message_id", "messageId", "uuid"),
    "occurred_at": ("occurred_at", "occurredAt", "timestamp", "time", "ts", "created_at",
                    "createdAt", "event_time", "eventTime"),
    "recorded_at": ("recorded_at", "recordedAt", "committed_at", "committedAt", "stored_at"),
    "data": ("data", "payload", "body"),
    "metadata": ("metadata", "meta"),
    "category": ("category",),
    "schema_version": ("schema_version", "schemaVersion"),
}  # fmt: skip
# Metadata keys taken from top-level fields of the same name when the row has them.
META_KEYS: dict[str, tuple[str, ...]] = {
    "actor": ("actor",),
    "reason": ("reason",),
    "correlation_id": ("correlation_id", "correlationId"),
    "causation_id": ("causation_id", "causationId"),
}
ROLES = tuple(CANDIDATES) + tuple(f"metadata.{key}" for key in META_KEYS)
REQUIRED = ("stream_id", "event_type")
TIME_FORMATS = ("iso", "epoch_s", "epoch_ms", "epoch_us")
_TEMPLATE = re.compile(r"\{([^{}]+)\}")
# (a name may hold spaces, as CSV headers do: "Account ID"; not at either end)
_PATH = re.compile(r"^[^{}\s.]([^{}.]*[^{}\s.])?(\.[^{}\s.]([^{}.]*[^{}\s.])?)*$")


@dataclass(frozen=True)
class TimeField:
    """A time's field and how to read it: ``iso`` (ISO 8601 text; a time without a zone is
    read in ``zone``, or refused if no zone is given), ``epoch_s``/``epoch_ms``/``epoch_us``
    (numbers), or a strptime pattern such as ``%d/%m/%Y %H:%M``."""

    path: str
    format: str = "iso"

    @classmethod
    def parse(cls, spec: str) -> TimeField:
        path, _, fmt = spec.partition(":")
        if not path or not _PATH.match(path):
            raise SourceError(
                f"The time field {spec!r} is not a field name.",
                hint="give FIELD or FIELD:FORMAT, e.g. --occurred-at created_at or "
                "--occurred-at ts:epoch_ms or --occurred-at 'when:%d/%m/%Y %H:%M'.",
                source=None,
                where=None,
            )
        return cls(path, fmt or "iso")

    def __str__(self) -> str:
        return self.path if self.format == "iso" else f"{self.path}:{self.format}"


@dataclass(frozen=True)
class ImportMapping:
    """Where each part of the event record comes from.

    ``fields`` maps a role (``stream_id``, ``event_type``, ``event_id``, ``data``,
    ``metadata``, ``category``, ``schema_version``, ``metadata.actor`` ...) to a field path
    (``order.id``) or, for ``stream_id``, ``event_type`` and ``category``, a template
    (``order-{order_id}``). ``occurred_at`` and ``recorded_at`` are :class:`TimeField`;
    ``zone`` reads times that carry no zone. Fields not mapped to a role make up the payload
    when no ``data`` field is mapped."""

    fields: dict[str, str] = field(default_factory=dict)
    occurred_at: TimeField | None = None
    recorded_at: TimeField | None = None
    zone: str | None = None
    # For printing only (not kept, not compared): what a source's own field stands for, for
    # sources whose rows esa makes (an event store's ``stream_id`` is its ``originator_id``).
    origins: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.fields)
        if self.occurred_at is not None:
            out["occurred_at"] = str(self.occurred_at)
        if self.recorded_at is not None:
            out["recorded_at"] = str(self.recorded_at)
        if self.zone is not None:
            out["zone"] = self.zone
        return dict(sorted(out.items()))

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> ImportMapping:
        fields = {k: v for k, v in raw.items() if k not in ("occurred_at", "recorded_at", "zone")}
        return cls(
            fields=fields,
            occurred_at=TimeField.parse(raw["occurred_at"]) if raw.get("occurred_at") else None,
            recorded_at=TimeField.parse(raw["recorded_at"]) if raw.get("recorded_at") else None,
            zone=raw.get("zone"),
        )

    @classmethod
    def parse(
        cls,
        pairs: Iterable[str] = (),
        *,
        occurred_at: str | None = None,
        recorded_at: str | None = None,
        zone: str | None = None,
    ) -> ImportMapping:
        """A mapping from ``ROLE=FIELD`` pairs, as ``esa import --map`` takes them."""
        fields: dict[str, str] = {}
        for pair in pairs:
            role, sep, where = pair.partition("=")
            role, where = role.strip(), where.strip()
            if role in ("occurred_at", "recorded_at") and sep and where:
                if role == "occurred_at":
                    occurred_at = where
                else:
                    recorded_at = where
                continue
            if not sep or role not in ROLES or not where:
                raise SourceError(
                    f"The mapping {pair!r} is not ROLE=FIELD with a known role.",
                    hint=f"roles are {', '.join(ROLES)}, occurred_at and recorded_at; e.g. "
                    "--map stream_id=account_id --map event_type=kind, or a template "
                    "--map stream_id='account-{account_id}'.",
                    source=None,
                    where=None,
                )
            if not _PATH.match(where) and not (
                role in ("stream_id", "event_type", "category") and _TEMPLATE.search(where)
            ):
                raise SourceError(
                    f"The mapping {pair!r} names no field.",
                    hint="give a field name or a dotted path (payload.account.id); stream_id, "
                    "event_type and category also take a template such as 'account-{id}'.",
                    source=None,
                    where=None,
                )
            fields[role] = where
        return cls(
            fields=fields,
            occurred_at=TimeField.parse(occurred_at) if occurred_at else None,
            recorded_at=TimeField.parse(recorded_at) if recorded_at else None,
            zone=zone,
        )

    def shown(self) -> list[str]:
        """The mapping as ``esa import`` prints it: a heading, then a line per part."""
        return [
            "mapping (kept with the import's cursor; a re-run needs no options):",
            *(f"  {role:22} <- {where}" for role, where in self.describe()),
        ]

    def describe(self) -> list[tuple[str, str]]:
        """(part of the event, where it comes from) for printing."""
        rows = self._describe()
        return [(role, self.origins.get(where, where)) for role, where in rows]

    def _describe(self) -> list[tuple[str, str]]:
        rows = [(role, _shown(self.fields.get(role))) for role in ("stream_id", "event_type")]
        rows.append(("event_id", self.fields.get("event_id") or "derived from the row's place"))
        occurred = str(self.occurred_at) if self.occurred_at else "recorded_at"
        recorded = str(self.recorded_at) if self.recorded_at else "the time of the import"
        rows += [("occurred_at", occurred), ("recorded_at", recorded)]
        if self.zone:
            rows.append(("times without a zone", self.zone))
        rows.append(("data", self.fields.get("data") or "the other fields"))
        for role in (
            "metadata",
            "category",
            "schema_version",
            *(f"metadata.{k}" for k in META_KEYS),
        ):
            if role in self.fields:
                rows.append((role, self.fields[role]))
        return rows


def _shown(where: str | None) -> str:
    return where if where is not None else "-"


def detect(
    given: ImportMapping, keys: Iterable[str], samples: Mapping[str, Any], *, source: str
) -> ImportMapping:
    """``given`` completed from the top-level ``keys`` a source's rows have (``samples``: the
    first non-null value of each), naming the choice it cannot make."""
    keys = list(dict.fromkeys(keys))
    present = set(keys)
    fields = dict(given.fields)
    for role, names in CANDIDATES.items():
        if role in fields:
            continue
        if role in ("data", "metadata"):  # only a field that holds an object (or its JSON)
            names = tuple(n for n in names if n not in present or _object_like(samples.get(n)))
            if not names:
                continue
        if role == "occurred_at" and given.occurred_at is not None:
            continue
        if role == "recorded_at" and given.recorded_at is not None:
            continue
        if names[0] in present:
            fields[role] = names[0]
            continue
        found = [name for name in names[1:] if name in present and name not in fields.values()]
        if len(found) > 1:
            raise SourceError(
                f"The source {source} has {len(found)} fields that could be the {role}: "
                f"{', '.join(found)}.",
                hint=f"say which: --map {role}={found[0]} (or --map {role}={found[1]}).",
                source=source,
                where=None,
            )
        if found:
            fields[role] = found[0]
    for key, names in META_KEYS.items():
        role = f"metadata.{key}"
        if role not in fields:
            found = [name for name in names if name in present]
            if found:
                fields[role] = found[0]
    missing = [role for role in REQUIRED if role not in fields]
    if missing:
        shown = ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else "")
        raise SourceError(
            f"The source {source} has no field for the {missing[0]} (its fields: "
            f"{shown or 'none'}).",
            hint=f"map one: --map {missing[0]}=FIELD, or a template such as "
            f"--map stream_id='order-{{{keys[0] if keys else 'id'}}}'.",
            source=source,
            where=None,
        )

    # a field named without a format (read as ISO) that holds numbers: epoch, by their size
    def time_field(role: str, asked: TimeField | None) -> TimeField | None:
        found = fields.pop(role, None)
        if asked is not None and asked.format != "iso":
            return asked
        path = asked.path if asked is not None else found
        return None if path is None else _time_field(path, samples)

    return ImportMapping(
        fields=fields,
        occurred_at=time_field("occurred_at", given.occurred_at),
        recorded_at=time_field("recorded_at", given.recorded_at),
        zone=given.zone,
    )


def _object_like(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return False
    return value is None or isinstance(value, dict)


def _time_field(path: str, samples: Mapping[str, Any]) -> TimeField:
    """An ISO time, or epoch numbers in the unit their size says (seconds up to the year
    5138, then milliseconds, then microseconds)."""
    value = samples.get(path)
    if isinstance(value, int | float) and not isinstance(value, bool):
        size = abs(value)
        unit = "epoch_s" if size < 1e11 else "epoch_ms" if size < 1e14 else "epoch_us"
        return TimeField(path, unit)
    return TimeField(path)


# -- the batch query ----------------------------------------------------------------------

# (a zone name too: a TIMESTAMP cast would drop "UTC" or "America/New_York" without a word)
_ZONED = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([zZ]|[+-]\d\d(:?\d\d)?(:?\d\d)?|[A-Za-z][\w/+-]*)\s*$"
_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
_NAME = r"^[A-Za-z][A-Za-z0-9_.:-]*$"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_path(path: str) -> str:
    if not path:
        return "'$'"
    return _quote("$." + ".".join('"' + part.replace('"', '\\"') + '"' for part in path.split(".")))


class _Parse:
    """References to a row's fields, all read from one parse of the row (DuckDB's
    ``from_json`` into a struct of the top-level keys the mapping uses): a key read only as
    text is typed VARCHAR, one read deeper or as a JSON value is kept as JSON."""

    def __init__(self, paths: Iterable[tuple[str, bool]]) -> None:
        self.types: dict[str, str] = {}
        for path, as_json in paths:
            top, _, rest = path.partition(".")
            if as_json or rest or self.types.get(top) == "JSON":
                self.types[top] = "JSON"
            else:
                self.types.setdefault(top, "VARCHAR")

    def spec(self) -> str:
        return _quote(json.dumps(self.types, separators=(",", ":")))

    def _ref(self, top: str) -> str:
        return 's."' + top.replace('"', '""') + '"'

    def text(self, path: str) -> str:
        """The field's value as text (a string's characters, a number's digits), or NULL."""
        top, _, rest = path.partition(".")
        if self.types[top] == "VARCHAR":
            return self._ref(top)
        return f"json_extract_string({self._ref(top)}, {_json_path(rest)})"

    def value(self, path: str) -> str:
        top, _, rest = path.partition(".")
        if not rest:
            return self._ref(top)
        return f"json_extract({self._ref(top)}, {_json_path(rest)})"

    def text_or_template(self, where: str) -> str:
        if not _TEMPLATE.search(where):
            return self.text(where)
        parts = []
        position = 0
        for match in _TEMPLATE.finditer(where):
            if match.start() > position:
                parts.append(_quote(where[position : match.start()]))
            parts.append(self.text(match.group(1).strip()))
            position = match.end()
        if position < len(where):
            parts.append(_quote(where[position:]))
        return "(" + " || ".join(parts) + ")"  # NULL when a field is missing


def _paths(where: str) -> list[str]:
    """The field paths a mapping value reads (a template's fields, or the path itself)."""
    found = [m.group(1).strip() for m in _TEMPLATE.finditer(where)]
    return found or [where]


def _time(
    spec: TimeField, zone: str | None, parse: _Parse, key: str
) -> tuple[dict[str, str], str, str]:
    """Columns of the middle layer for a time field (its text ``{key}_t``, whether it carries
    a zone ``{key}_z``, its parse ``{key}_p``), then the time as epoch microseconds (or NULL)
    and the reason it cannot be read (or NULL), over those columns."""
    raw, zoned_col, parsed = f"{key}_t", f"{key}_z", f"{key}_p"
    local: str | None = None  # the time read without a zone, when a zone is given for it
    fmt = spec.format
    layer = {raw: parse.text(spec.path)}
    if fmt in ("epoch_s", "epoch_ms", "epoch_us"):
        scale = {"epoch_s": "1000000", "epoch_ms": "1000", "epoch_us": "1"}[fmt]
        unit = {"epoch_s": "seconds", "epoch_ms": "milliseconds", "epoch_us": "microseconds"}
        layer[parsed] = f"TRY_CAST({raw} AS DOUBLE)"
        value = f"TRY_CAST({parsed} * {scale} AS BIGINT)"
        what = f" is not a number of {unit[fmt]} since 1970"
        reason = (
            f"CASE WHEN {raw} IS NOT NULL AND {parsed} IS NULL "
            f"THEN {_quote(spec.path + ' ')} || esa_shown({raw}) || {_quote(what)} "
            f"WHEN {raw} IS NOT NULL AND {value} IS NULL THEN {_quote(spec.path + ' ')} || "
            f"esa_shown({raw}) || ' is out of range as {fmt}' END"
        )
        return layer, value, reason
    if fmt == "iso":
        layer[zoned_col] = f"regexp_matches({raw}, {_quote(_ZONED)})"
        # (RFC 3339 allows a lower-case t and z, which DuckDB does not read)
        text = (
            rf"regexp_replace(regexp_replace({raw}, '^(\d+-\d+-\d+)t', '\1T'), "
            r"'(\d)z\s*$', '\1Z')"
        )
        zoned = f"coalesce(TRY_CAST({raw} AS TIMESTAMPTZ), TRY_CAST({text} AS TIMESTAMPTZ))"
        naive = f"coalesce(TRY_CAST({raw} AS TIMESTAMP), TRY_CAST({text} AS TIMESTAMP))"
        local = naive if zone else None
        layer[parsed] = f"CASE WHEN {zoned_col} THEN epoch_us({zoned}) " + (
            f"ELSE epoch_us(timezone({_quote(zone)}, {naive})) END"
            if zone
            else f"WHEN {naive} IS NOT NULL THEN -1 END"
        )
        format_hint = "ISO 8601, e.g. 2025-03-01T09:30:00Z"
    else:
        has_zone = "%z" in fmt or "%Z" in fmt
        layer[zoned_col] = "TRUE" if has_zone else "FALSE"
        if has_zone:
            layer[parsed] = f"epoch_us(TRY_STRPTIME({raw}, {_quote(fmt)}))"
        elif zone:
            local = f"CAST(TRY_STRPTIME({raw}, {_quote(fmt)}) AS TIMESTAMP)"
            layer[parsed] = f"epoch_us(timezone({_quote(zone)}, {local}))"
        else:
            layer[parsed] = f"CASE WHEN TRY_STRPTIME({raw}, {_quote(fmt)}) IS NOT NULL THEN -1 END"
        format_hint = f"the format {fmt}"
    no_zone = (
        "NULL" if zone else f"{_quote(spec.path + ' ')} || esa_shown({raw}) || ' has no time zone'"
    )
    # Without a zone to read them in, a time that has none parses to the marker -1.
    value = f"CASE WHEN {zoned_col} OR {_quote(zone or '')} <> '' THEN {parsed} END"
    gap = ""
    if local is not None and zone:  # a local time the clocks skipped (read as an hour later)
        layer[f"{key}_g"] = (
            f"timezone({_quote(zone)}, timezone({_quote(zone)}, {local})) <> {local}"
        )
        gap = (
            f"WHEN NOT {zoned_col} AND {key}_g THEN {_quote(spec.path + ' ')} || "
            f"esa_shown({raw}) || {_quote(' does not exist in ' + zone)} || "
            "' (the clocks went forward: a daylight-saving gap)' "
        )
    reason = (
        f"CASE WHEN {raw} IS NULL THEN NULL "
        f"WHEN {parsed} IS NULL THEN {_quote(spec.path + ' ')} || esa_shown({raw}) || "
        f"{_quote(' is not a time in ' + format_hint)} "
        f"{gap}WHEN NOT {zoned_col} THEN {no_zone} END"
    )
    return layer, value, reason


def _object_or_its_text(value: str) -> str:
    """A JSON value as it is, or, if it is a string holding JSON (a payload exported as text),
    that JSON. A value read by from_json is minified text: its first character tells its type."""
    inner = f"json_extract_string({value}, '$')"
    return (
        f"CASE WHEN left({value}, 1) = '\"' AND json_valid({inner}) "
        f"THEN json({inner}) ELSE {value} END"
    )


def query(mapping: ImportMapping, *, name: str) -> str:
    """The DuckDB query that turns a batch (``rows``: ``line`` JSON text, ``src_at``
    coordinates, ``src_row``) into the ingest columns and a ``reason`` for each row it cannot
    use. Each row is parsed once; each value is computed once, in layers."""
    f = mapping.fields
    times = [t for t in (mapping.occurred_at, mapping.recorded_at) if t is not None]
    wanted: list[tuple[str, bool]] = []
    for role, where in f.items():
        for path in _paths(where):
            wanted.append((path, role in ("data", "metadata") or role.startswith("metadata.")))
    wanted += [(t.path, False) for t in times]
    parse = _Parse(wanted)
    used = {path for role, where in f.items() if role != "data"
            for path in _paths(where)} | {t.path for t in times}  # fmt: skip
    used_top = {path for path in used if "." not in path}
    # A JSON value read by from_json is minified text: its first character tells its type.
    middle: dict[str, str] = {
        "stream_id": parse.text_or_template(f["stream_id"]),
        "event_type": parse.text_or_template(f["event_type"]),
    }
    if "data" in f:
        middle["d"] = _object_or_its_text(parse.value(f["data"]))
    else:
        # the row without the mapped fields (a JSON merge patch's null removes a key; any
        # key, even "" or one with quotes or backslashes, and the order and nulls kept)
        removed = "{" + ",".join(json.dumps(k) + ":null" for k in sorted(used_top) if k) + "}"
        payload = f"json_merge_patch(line, {_quote(removed)})"
        # a nested field mapped ("order.id") leaves the rest of its object ("order.total")
        for path in sorted(p for p in used if "." in p):
            parts = path.split(".")
            if any(".".join(parts[:k]) in used for k in range(1, len(parts))):
                continue  # (an object holding it goes whole)
            patch: Any = None
            for part in reversed(parts):
                patch = {part: patch}
            payload = (
                f"json_merge_patch({payload}, CASE WHEN json_type(line, "
                f"{_json_path('.'.join(parts[:-1]))}) = 'OBJECT' THEN {_quote(json.dumps(patch))} "
                "ELSE '{}' END)"
            )
        middle["d"] = f"CASE WHEN object THEN {payload} END"
    if "metadata" in f:
        base = f"coalesce({_object_or_its_text(parse.value(f['metadata']))}, JSON '{{}}')"
    else:
        base = "JSON '{}'"
    extras_sql = [
        f"{_quote(role.split('.', 1)[1])}, {parse.value(where)}"
        for role, where in f.items()
        if role.startswith("metadata.")
    ]
    first: dict[str, str] = {}  # computed a step before the middle layer, which names them
    at_seed = f"'esa-at:' || {_quote(name)} || chr(31) || src_at"
    if "event_id" in f:
        source_id = parse.text(f["event_id"])  # (an id of blanks is none: "" is not one id)
        first["source_id"] = f"CASE WHEN trim({source_id}) <> '' THEN {source_id} END"
        middle["source_uuid"] = f"regexp_matches(coalesce(source_id, ''), {_quote(_UUID)})"
        extras_sql.insert(
            0,
            "'source_event_id', CASE WHEN NOT regexp_matches(coalesce(source_id, ''), "
            f"{_quote(_UUID)}) THEN source_id END",
        )
        # the stream too: two tables' row counters (id 1, 2, 3 in each) are not one event;
        # a row whose id is missing gets one from its place
        seed = f"coalesce('esa-id:' || {middle['stream_id']} || chr(31) || source_id, {at_seed})"
    else:
        seed = at_seed
    middle["meta"] = (
        f"json_merge_patch({base}, json_object({', '.join(extras_sql)}))" if extras_sql else base
    )
    if extras_sql:  # (a merge patch over a value that is not an object replaces it whole)
        middle["meta_base"] = base
    middle["h"] = f"md5({seed})"
    occurred, occurred_bad = "NULL", "NULL"
    if mapping.occurred_at is not None:
        layer, occurred, occurred_bad = _time(mapping.occurred_at, mapping.zone, parse, "occ")
        middle.update(layer)
    recorded, recorded_bad = "NULL", "NULL"
    if mapping.recorded_at is not None:
        layer, recorded, recorded_bad = _time(mapping.recorded_at, mapping.zone, parse, "rec")
        middle.update(layer)
        recorded_bad = (
            f"coalesce({recorded_bad}, CASE WHEN rec_t IS NULL "
            f"THEN {_quote('no ' + mapping.recorded_at.path + ' (the commit time)')} END)"
        )
    if "category" in f:
        middle["category"] = parse.text_or_template(f["category"])
    if "schema_version" in f:
        middle["sv_t"] = parse.text(f["schema_version"])
    derived = (
        "substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-3' || substr(h, 14, 3) || '-8' || "
        "substr(h, 18, 3) || '-' || substr(h, 21, 12)"
    )
    event_id = (
        derived
        if "event_id" not in f
        else f"CASE WHEN source_uuid THEN lower(source_id) ELSE {derived} END"
    )
    columns = {
        "stream_id": "stream_id",
        "event_type": "event_type",
        "event_id": event_id,
        "occurred_us": occurred,
        "recorded_us": recorded,
        "data": "CAST(d AS VARCHAR)",
        "metadata": "CAST(meta AS VARCHAR)",
    }
    if "category" in f:
        columns["category"] = "category"
    if "schema_version" in f:
        columns["schema_version"] = "TRY_CAST(sv_t AS INTEGER)"
    checks = [
        ("not_text", "'not UTF-8 text'"),
        ("NOT valid", "'not valid JSON'"),
        ("NOT object", "'not a JSON object'"),
        ("stream_id IS NULL", _quote(f"no stream id ({f['stream_id']})")),
        ("event_type IS NULL", _quote(f"no event type ({f['event_type']})")),
        (
            f"NOT regexp_matches(event_type, {_quote(_NAME)})",
            "'the event type ' || esa_shown(event_type) || ' is not a name (letters, digits, _ . : -)'",
        ),
    ]
    if "data" in f:
        checks += [
            ("d IS NULL", _quote(f"no payload ({f['data']})")),
            ("left(d, 1) <> '{'", _quote(f"the payload {f['data']} is not a JSON object")),
        ]
    checks.append(
        ("left(meta, 1) <> '{'" + (" OR left(meta_base, 1) <> '{'" if extras_sql else ""), _quote(f"the metadata {f.get('metadata', '')} is not a JSON object"))
    )  # fmt: skip
    if "category" in f:
        checks.append(("category IS NULL", _quote(f"no category ({f['category']})")))
    if "schema_version" in f:
        checks.append(
            ("sv_t IS NOT NULL AND (TRY_CAST(sv_t AS INTEGER) IS NULL "
             "OR TRY_CAST(sv_t AS DOUBLE) <> TRY_CAST(sv_t AS INTEGER))",  # (1.5 is not 2)
             _quote(f['schema_version'] + ' ') + " || esa_shown(sv_t) || ' is not a whole number'")
        )  # fmt: skip
    reason_parts = " ".join(f"WHEN {cond} THEN {text}" for cond, text in checks)
    reason = f"CASE {reason_parts} ELSE coalesce({occurred_bad}, {recorded_bad}) END"
    outer = ",\n       ".join(f"{expr} AS {column}" for column, expr in columns.items())
    step1 = "".join(f", {v} AS {k}" for k, v in first.items())
    step2 = ",\n           ".join(f"{v} AS {k}" for k, v in middle.items())
    return f"""
SELECT src_row AS "row", src_at AS "at",
       {outer},
       {reason} AS reason
FROM (
    SELECT src_row, src_at, not_text, valid, object{"".join(", " + k for k in first)},
           {step2}
    FROM (
        SELECT *{step1} FROM (
            SELECT src_row, src_at, line, not_text, valid, object,
                   CASE WHEN object THEN from_json(line, {parse.spec()}) END AS s
            FROM (
                SELECT src_row, src_at, line, line IS NULL AS not_text,
                       coalesce(json_valid(line), false) AS valid,
                       coalesce(json_valid(line) AND left(ltrim(line), 1) = '{{', false) AS object
                FROM rows
            )
        )
    )
)
"""


def apply(con: Any, batch: pa.Table, mapping: ImportMapping, *, name: str) -> pa.Table:
    """Run the mapping over ``batch`` (columns ``line``, ``at``) on the DuckDB connection
    ``con``: the ingest columns, ``row``, ``at`` and ``reason``, in the batch's order."""
    import numpy as np

    batch = pa.table(
        {
            "line": batch["line"],
            "src_at": batch["at"],
            "src_row": pa.array(np.arange(batch.num_rows, dtype=np.int64)),
        }
    )
    con.execute("CREATE OR REPLACE MACRO esa_shown(v) AS '\"' || v || '\"'")
    con.register("rows", batch)
    try:
        result = con.sql(query(mapping, name=name) + ' ORDER BY "row"').to_arrow_table()
    finally:
        con.unregister("rows")
    return result
