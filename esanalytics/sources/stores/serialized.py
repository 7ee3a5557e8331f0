"""What the Rails Event Store, Marten and Axon layouts share: reading the columns in which
each framework keeps serialized payloads, and writing an event row as JSON text.

A payload column holds JSON text (a ``json``/``jsonb``/``text`` column, or UTF-8 bytes in a
``bytea``/``blob`` one), or a format esa cannot read: YAML or Ruby's Marshal (Rails Event
Store's default and its alternative), Java's object serialization, a cipher or any other bytes.
Those are told apart by their first bytes (:func:`sniff`), and a layout raises
:func:`unreadable` for them, naming the row and its serializer. That stops the import under
``--on-error skip`` too: what is wrong is the store's serializer, not one row, and skipping
would leave out every event it wrote, silently but for a rejects file. JSON text is passed through
as it is: a row whose text is not valid JSON becomes a line that is not valid JSON, which the
mapping rejects with that reason under the row's coordinates (``TABLE#POSITION``).
"""

from __future__ import annotations

import json
import re
from typing import Any

from esanalytics.exceptions import SourceError

__all__ = [
    "choose_table",
    "column_types",
    "event_line",
    "json_text",
    "parse_object",
    "safe_category",
    "schema_of",
    "sniff",
    "text_of",
    "unreadable",
]


def choose_table(layout: str, what: str, tables: list[str], table: str | None) -> str:
    """The one table of a layout among ``tables`` (those the database holds), or ``table``
    when ``--schema LAYOUT:TABLE`` names one; ``what`` says what such a table is."""
    tables = sorted(tables)
    if table is not None:
        if table not in tables:
            raise SourceError(
                f"--schema {layout}:{table}: there is no {what} {table} (found: "
                f"{', '.join(tables) or 'none'}).",
                hint="name one of the tables found, or leave :TABLE out.",
                source=None,
                where=None,
            )
        return table
    if len(tables) > 1:
        raise SourceError(
            f"The database holds several {what}s: {', '.join(tables)}.",
            hint=f"choose one with --schema {layout}:{tables[0]} (one import each, with its "
            "own --name).",
            source=None,
            where=None,
        )
    return tables[0]


def schema_of(table: str) -> str:
    """``schema.`` of a qualified table name, or nothing."""
    return table.rsplit(".", 1)[0] + "." if "." in table else ""


# Put before text that looks like JSON and is not: the event line then does not parse either
# (even when the text would complete it), and the mapping rejects the row by its coordinates.
NOT_JSON = "<not valid JSON> "

_UNSAFE = re.compile(r'[/\\=:*?"<>|%\x00-\x1f]')


def text_of(value: str | bytes | None) -> str | None:
    """A column's value as text: bytes are read as UTF-8 (a BOM dropped); None stays None.
    Bytes that are not UTF-8 raise :class:`UnicodeDecodeError` (see :func:`sniff`)."""
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8").removeprefix("\ufeff")


def sniff(value: str | bytes) -> str:
    """What a serialized column holds, by its first bytes: ``json`` (an object or array),
    ``xml``, ``yaml`` (``---``), ``marshal`` (Ruby's ``\\x04\\x08``), ``java`` (Java object
    serialization's ``\\xac\\xed``), ``text`` (other UTF-8 text: a JSON string or number, or
    a cipher's base64) or ``binary`` (bytes that are not UTF-8: a cipher, CBOR, protobuf)."""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if raw.startswith(b"\xac\xed"):
        return "java"
    if raw.startswith(b"\x04\x08"):
        return "marshal"
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff").lstrip()
    except UnicodeDecodeError:
        return "binary"
    if text.startswith(("{", "[")):
        return "json"
    if text.startswith("<"):
        return "xml"
    if text.startswith("---"):
        return "yaml"
    return "text"


def json_text(value: str | bytes | None) -> tuple[str | None, str]:
    """A serialized column as JSON text, and what it holds (see :func:`sniff`): ``json``
    with the text when it is JSON (any JSON value; text that starts like JSON and does not
    parse comes back behind :data:`NOT_JSON`), else None and the kind."""
    if value is None:
        return None, "json"
    if isinstance(value, str):
        text = value
    else:
        raw = bytes(value)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None, sniff(raw)
    body = text.lstrip("\ufeff \t\r\n")
    if body[:1] in ("{", "["):
        try:
            json.loads(body)
        except ValueError:
            return NOT_JSON + body, "json"
        return body, "json"
    kind = sniff(body)
    if kind == "text":
        try:
            json.loads(body)
        except ValueError:
            return None, kind
        return body, "json"
    return None, kind


_WHAT = {
    "yaml": "YAML",
    "marshal": "Ruby Marshal data",
    "java": "Java object serialization",
    "binary": "bytes that are not text (a cipher, or a binary format such as CBOR)",
    "text": "text that is not a JSON object",
    "xml": "XML",
}


def unreadable(where: str, column: str, kind: str, *, hint: str) -> SourceError:
    """The error for a row whose ``column`` holds a serialized form esa cannot read."""
    return SourceError(
        f"{where}: the {column} is {_WHAT.get(kind, kind)}, which esa cannot read as JSON. "
        "Nothing of this batch was written.",
        hint=hint,
        source=None,
        where=where,
    )


def safe_category(name: str | None, fallback: str) -> str:
    """A category the lake can keep as a folder name: ``::`` (a Ruby or C# namespace) becomes
    ``.``, other characters a folder name cannot hold become ``_``; empty becomes
    ``fallback``."""
    if not name:
        return fallback
    name = _UNSAFE.sub("_", name.replace("::", ".")).lstrip(".")
    return name[:128] or fallback


def event_line(
    *,
    event_id: str | None,
    stream_id: str | None,
    event_type: str | None,
    occurred_at: str | None,
    recorded_at: str | None,
    category: str | None,
    data: str | None,
    metadata: dict[str, Any] | str | None,
    extras: dict[str, Any],
) -> str:
    """One event row as JSON object text with the canonical keys. ``data`` is spliced in as
    the JSON text it is (text that is not JSON makes the line invalid, so the mapping names
    the row); ``metadata`` is the store's own (parsed, or its raw text when it does not
    parse, likewise), with ``extras`` (``source_version``, ``links``...) over it."""
    head = {
        "event_id": event_id,
        "stream_id": stream_id,
        "event_type": event_type,
        "occurred_at": occurred_at,
        "recorded_at": recorded_at,
        "category": category,
    }
    if isinstance(metadata, str):  # (its text did not parse: keep it, so the line fails)
        meta = metadata
    else:
        merged = dict(metadata or {})
        merged.update({k: v for k, v in extras.items() if v is not None})
        meta = json.dumps(merged, ensure_ascii=False, separators=(",", ":"))
    body = json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1]
    return f'{body},"data":{"null" if data is None else data},"metadata":{meta}}}'


def parse_object(text: str | None) -> dict[str, Any] | str | None:
    """A metadata column's JSON text (from :func:`json_text`) parsed, None when NULL; the
    text itself when it did not parse (the line will not either); a value that is not an
    object is kept under ``value``."""
    if text is None:
        return None
    if text.startswith(NOT_JSON):
        return text
    value = json.loads(text)
    if isinstance(value, dict):
        return value
    return {"value": value}


def column_types(db: Any, table: str) -> dict[str, str]:
    """A PostgreSQL table's (``schema.table`` or one in the current schema) column types,
    by lower-case column name (``bytea``, ``jsonb``, ``oid``...)."""
    schema, _, name = table.rpartition(".")

    def literal(text: str) -> str:
        """``text`` as an SQL string literal."""
        return "'" + text.replace("'", "''") + "'"

    found = db.query(
        "SELECT lower(column_name) AS c, data_type AS t FROM information_schema.columns "
        f"WHERE table_name = {literal(name)} AND table_schema = "
        + (literal(schema) if schema else "current_schema()")
    ).to_pylist()
    return {r["c"]: r["t"] for r in found}
