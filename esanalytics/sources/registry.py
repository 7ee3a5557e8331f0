"""Which source class reads a ``SOURCE`` argument: a path (by its extension) or a URL (by its
scheme: ``kafka://``, ``postgresql://``, ``sqlite:///``)."""

from __future__ import annotations

import os
import re

from esanalytics.exceptions import SourceError
from esanalytics.sources.base import Source
from esanalytics.sources.files import open_file_source

__all__ = ["open_source"]

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def open_source(spec: str | os.PathLike[str], *, schema: str | None = None) -> Source:
    """The source ``spec`` names. ``schema`` picks a database's event store layout (found by
    the tables present when not given)."""
    text = os.fspath(spec)
    match = _URL.match(text) if isinstance(text, str) else None
    scheme = match.group(1).lower() if match else None
    if scheme is None:
        if schema is not None:
            raise SourceError(
                f"--schema {schema} is for a database source, and {text} is a file.",
                hint="leave --schema out for files; give a database as postgresql://... or "
                "sqlite:///path.",
                source=None,
                where=None,
            )
        return open_file_source(text)
    if scheme == "kafka":
        if schema is not None:
            raise SourceError(
                f"--schema {schema} is for a database source, and {text} is Kafka.",
                hint="leave --schema out for kafka:// sources.",
                source=None,
                where=None,
            )
        from esanalytics.sources.kafka import open_kafka_source

        return open_kafka_source(text)
    if scheme in ("postgresql", "postgres", "sqlite"):
        from esanalytics.sources.sql import open_sql_source

        return open_sql_source(text, schema=schema)
    raise SourceError(
        f"esa cannot import from a {scheme}:// source ({text}).",
        hint="import a file path, kafka://BROKER/TOPIC, postgresql://USER@HOST/DATABASE or "
        "sqlite:///PATH.",
        source=None,
        where=None,
    )
