"""Type aliases shared across layers."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from typing import Any, TypeAlias

#: A point in time: an aware ``datetime``, a ``date`` (midnight UTC), or an ISO 8601 string
#: with an offset (``2024-03-01T09:30:00+01:00``, ``...Z``) or a plain date (``2024-03-01``).
TimeLike: TypeAlias = datetime | date | str

#: A JSON object as Python sees it.
JSONObject: TypeAlias = Mapping[str, Any]
