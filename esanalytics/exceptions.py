"""One error tree for esanalytics.

Every error a user can meet derives from :class:`EsaError` and also from the builtin it
resembles, so ``except ValueError`` keeps working. Messages end with a ``Hint:`` that says what
to do, and the facts are on attributes so callers need not parse messages::

    EsaError
    ├── ValidationError (ValueError)          bad input; nothing was written
    │   ├── InvalidStreamIdError
    │   ├── InvalidTimestampError
    │   ├── InvalidEventDataError
    │   ├── InvalidEventTypeError
    │   ├── EmptyAppendError
    │   └── InvalidExpectedVersionError
    ├── ConcurrencyError (RuntimeError)       expected version did not match
    ├── DuplicateEventError (ValueError)      an event id is already in the log, elsewhere
    ├── LakeNotFoundError (FileNotFoundError) no lake at the path
    ├── StreamNotFoundError (KeyError)        the stream has no events
    ├── UnknownEventTypeError (LookupError)   a stored event type or schema version the code lacks
    └── CorruptLakeError (OSError)            a file of the lake is unreadable or inconsistent
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConcurrencyError",
    "CorruptLakeError",
    "DuplicateEventError",
    "EmptyAppendError",
    "EsaError",
    "InvalidEventDataError",
    "InvalidEventTypeError",
    "InvalidExpectedVersionError",
    "InvalidStreamIdError",
    "InvalidTimestampError",
    "LakeNotFoundError",
    "StreamNotFoundError",
    "UnknownEventTypeError",
    "ValidationError",
]


class EsaError(Exception):
    """Base of every esanalytics error.

    ``problem`` says what is wrong, ``hint`` what to do; ``str(error)`` joins them. Where the
    fix reads differently at the ``esa`` command (``esa init`` rather than ``create=True``), a
    ``cli_hint`` field says it in the command's words, and the command prints that instead.
    """

    def __init__(self, problem: str, *, hint: str | None = None, **fields: Any) -> None:
        self.problem = problem
        self.hint = hint
        for name, value in fields.items():
            setattr(self, name, value)
        super().__init__(problem if hint is None else f"{problem}\nHint: {hint}")


class ValidationError(EsaError, ValueError):
    """Input was rejected before anything was written."""


class InvalidStreamIdError(ValidationError):
    """A stream id or category is empty, too long, has control characters or is unsafe."""


class InvalidTimestampError(ValidationError):
    """A timestamp has no time zone or cannot be parsed."""


class InvalidEventDataError(ValidationError):
    """Event data or metadata is not a JSON object (or not JSON-serializable)."""


class InvalidEventTypeError(ValidationError):
    """An event type is empty or not a name."""


class EmptyAppendError(ValidationError):
    """An append was given no events."""


class InvalidExpectedVersionError(ValidationError):
    """``expected_version`` is neither a sentinel nor a non-negative int."""


class ConcurrencyError(EsaError, RuntimeError):
    """The stream's version was not the expected one: someone else appended first.

    Attributes: ``stream_id``, ``expected`` (what the caller said) and ``actual`` (the stream's
    version when the append was checked; 0 for a stream with no events).
    """

    stream_id: str
    expected: object
    actual: int


class DuplicateEventError(EsaError, ValueError):
    """An event id is already in the log, but not as a retry of the same append."""

    event_id: str


class LakeNotFoundError(EsaError, FileNotFoundError):
    """There is no lake at the given path."""

    path: str


class StreamNotFoundError(EsaError, KeyError):
    """The stream has no events (at the requested bound)."""

    stream_id: str

    def __str__(self) -> str:  # KeyError would otherwise print the repr of its argument
        return str(self.args[0])


class UnknownEventTypeError(EsaError, LookupError):
    """An event type (or schema version) that the reading code does not know."""

    event_type: str


class CorruptLakeError(EsaError, OSError):
    """A file of the lake is truncated, unreadable or does not match the commit log."""

    path: str
