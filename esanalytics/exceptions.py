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
    │   ├── InvalidExpectedVersionError
    │   └── SourceError                       an import's source: a bad row, mapping or file
    │       └── SourceChangedError            a source rewritten under its stored cursor
    ├── ConcurrencyError (RuntimeError)       expected version did not match
    │   └── ImportConflictError               another run of the same import committed first
    ├── LakeChangedError (RuntimeError)       files a read needed were compacted and vacuumed away
    ├── DuplicateEventError (ValueError)      an event id is already in the log, elsewhere
    ├── LakeNotFoundError (FileNotFoundError) no lake at the path
    ├── StreamNotFoundError (KeyError)        the stream has no events
    ├── EmptyScopeError (LookupError)         nothing in the asked scope (entity, actor, key...)
    ├── UnknownEventTypeError (LookupError)   a stored event type or schema version the code lacks
    ├── CorruptLakeError (OSError)            a file of the lake is unreadable or inconsistent
    └── StorageError (OSError)                the disk is full or the lake read-only; nothing written

Warnings (answers that stand, but not as asked) derive from :class:`EsaWarning`
(``UserWarning``), with the same ``problem`` and ``hint``::

    EsaWarning (UserWarning)
    └── FutureCutWarning                      an as-of cut in the future: answered as of now
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConcurrencyError",
    "CorruptLakeError",
    "DuplicateEventError",
    "EmptyAppendError",
    "EmptyScopeError",
    "EsaError",
    "EsaWarning",
    "FutureCutWarning",
    "ImportConflictError",
    "InvalidEventDataError",
    "InvalidEventTypeError",
    "InvalidExpectedVersionError",
    "InvalidStreamIdError",
    "InvalidTimestampError",
    "LakeChangedError",
    "LakeNotFoundError",
    "SourceChangedError",
    "SourceError",
    "StorageError",
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


class SourceError(ValidationError):
    """An import's source cannot be read as events: a malformed row, a mapping that finds
    no field or two, an empty source. Nothing of the batch was written.

    Attributes: ``source`` (the import's name) and ``where`` (the row's coordinates in the
    source, such as ``orders.jsonl:12``, or None for the whole source).
    """

    source: str | None
    where: str | None


class SourceChangedError(SourceError):
    """The source is not the one the stored cursor was taken from (a file truncated or
    rewritten, a new file sorted before the cursor): importing on could lose or repeat
    events, so nothing is read."""


class ImportConflictError(ConcurrencyError):
    """Another run of the same import committed while this one read its batch; this batch
    was not written. Running the import again continues from the stored cursor."""


class LakeChangedError(EsaError, RuntimeError):
    """A read kept finding that the files of its view had been compacted and then deleted
    by ``vacuum`` before it could open them. Nothing is damaged: read again, or vacuum with a
    longer ``older_than`` while readers run.

    Attribute: ``path`` (the last file that was gone).
    """

    path: str


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


class EmptyScopeError(EsaError, LookupError):
    """Nothing is in the asked scope: no events for the entity, actor, correlation id or
    period of a report, or no state for a projection's key, at the asked cut. An empty answer
    would read as a clean one, so it is refused.

    Attributes: ``scope`` (what was asked) and ``suggestions`` (close names that do exist,
    perhaps the one that was meant; empty when none is close).
    """

    scope: object
    suggestions: list[str]


class UnknownEventTypeError(EsaError, LookupError):
    """An event type (or schema version) that the reading code does not know."""

    event_type: str


class CorruptLakeError(EsaError, OSError):
    """A file of the lake is truncated, unreadable or does not match the commit log."""

    path: str


class StorageError(EsaError, OSError):
    """A write found the disk full (or over quota) or the lake read-only; nothing was written.

    Attributes: ``path`` (the lake) and ``errno`` (``ENOSPC``, ``EDQUOT``, ``EROFS``...).
    """

    path: str

    def __init__(
        self, problem: str, *, hint: str | None = None, errno: int | None = None, **fields: Any
    ) -> None:
        super().__init__(problem, hint=hint, **fields)
        self.errno = errno  # set after OSError's own __init__, which clears it


class EsaWarning(UserWarning):
    """Base of esanalytics' warnings: ``problem`` says what is off, ``hint`` what to do."""

    def __init__(self, problem: str, *, hint: str | None = None) -> None:
        self.problem = problem
        self.hint = hint
        super().__init__(problem if hint is None else f"{problem}\nHint: {hint}")


class FutureCutWarning(EsaWarning):
    """A system-time cut (``as_of``) after now: nothing is recorded in the future, so the
    answer is the log as it is now."""
