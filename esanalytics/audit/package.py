"""Everything an audit report shows, gathered in one place (reports run no query)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from esanalytics.audit.exceptions import audit_exceptions
from esanalytics.audit.trail import Scope, empty_scope_error, trail
from esanalytics.domain import SegregationRule
from esanalytics.engine import COLUMNS, Session
from esanalytics.events import hashes_match
from esanalytics.store import EventStore

__all__ = ["AuditPackage", "collect"]


@dataclass(frozen=True)
class AuditPackage:
    title: str
    scope: str
    position: int
    digest: str
    trail: pa.Table
    exceptions: pa.Table
    integrity_ok: bool
    integrity_text: str
    complete: bool
    completeness_text: str
    command: str
    checkpoint: dict[str, Any] | None = None
    #: For an entity with a projection in the catalog: that projection's name and the
    #: entity's state history (key, valid_from, valid_to, fields...), for charts.
    projection: str | None = None
    history: pa.Table | None = None
    #: The system time of the pinned position: the report's cut, until which a current
    #: state is shown to last.
    as_of: datetime | None = None


def _scope_args(scope: Scope) -> list[str]:
    if scope.kind == "period":
        return ["--period", str(scope.start), str(scope.end)]
    return [f"--{scope.kind}", str(scope.value)]


def collect(
    store: EventStore,
    scope: Scope,
    *,
    position: int | None = None,
    checkpoint: dict[str, Any] | None = None,
    key: bytes | None = None,
    backdated_after: timedelta = timedelta(days=1),
    rules: Sequence[SegregationRule] | None = None,
) -> AuditPackage:
    """The trail, exceptions, integrity (of every event in scope: its content against its
    hash, and its link to the event before it) and completeness, pinned to one position.

    Raises :class:`~esanalytics.exceptions.EmptyScopeError` when nothing is in scope (a
    misspelt id, say): a report of no events would read as a clean one."""
    session = Session(store, position=position)
    pinned = session.position
    events = trail(session, scope)
    if events.num_rows == 0:
        raise empty_scope_error(session, scope)
    full = session.sql(
        f"SELECT {COLUMNS} FROM {scope.source(session)} WHERE {scope.where()} "
        "ORDER BY global_position"
    ).to_arrow_table()
    problems = []
    if full.num_rows:
        bad = np.flatnonzero(~hashes_match(full)).tolist()
        problems += [
            f"position {full['global_position'][i].as_py()}: content does not match its hash"
            for i in bad
        ]
        in_scope = dict(
            zip(full["global_position"].to_pylist(), full["hash"].to_pylist(), strict=True)
        )
        wanted = [p - 1 for p in in_scope if p > 1 and p - 1 not in in_scope]
        listed = ", ".join(str(p) for p in wanted)
        # A join, not `IN (...)`: DuckDB then reads `hash` only where a position matched
        # (measured on 10M events: 0.36 s against 0.9-1.2 s).
        before = dict(
            session.sql(
                "SELECT e.global_position, e.hash FROM events_all e "
                f"JOIN (SELECT unnest([{listed}]::BIGINT[]) AS p) w ON e.global_position = w.p"
            ).fetchall()
        )
        before.update(in_scope)
        for pos, prev in zip(
            full["global_position"].to_pylist(), full["prev_hash"].to_pylist(), strict=True
        ):
            expected = before.get(pos - 1) if pos > 1 else "0" * 64
            if prev != expected:
                problems.append(f"position {pos}: not linked to the event before it")
    if checkpoint is not None:
        from esanalytics.audit.checkpoint import check_checkpoint

        problems += [f"checkpoint: {f.detail}" for f in check_checkpoint(store, checkpoint, key)]
    count, top = session.sql(
        "SELECT count(*), coalesce(max(global_position), 0) FROM events_all"
    ).fetchall()[0]
    gaps = []
    if count != top:
        gaps.append(f"the log holds {count:,} events for positions 1..{top:,}")
    if scope.kind == "entity":
        versions = full["version"].to_pylist()
        if versions != list(range(1, len(versions) + 1)):
            gaps.append("the stream's versions are not 1, 2, 3 ...")
    digest = session.sql(
        f"SELECT hash, recorded_at FROM events_all WHERE global_position = {pinned}"
    ).fetchall()
    command = shlex.join(
        ["esa", "report", str(store.path), *_scope_args(scope), "--position", str(pinned)]
    )
    projection, history = None, None
    if scope.kind == "entity" and full.num_rows:
        from esanalytics.catalog import PROJECTIONS

        category = full["category"][0].as_py()
        for candidate in PROJECTIONS.values():
            if candidate.category == category:
                projection = candidate.name
                history = candidate.history(session, key=scope.value).to_arrow_table()
                break
    return AuditPackage(
        title=f"Audit report: {scope.kind} {scope.value or f'{scope.start} .. {scope.end}'}",
        scope=f"{scope.kind}: {scope.value or ''}{f'{scope.start} .. {scope.end}' if scope.kind == 'period' else ''}",
        position=pinned,
        digest=digest[0][0] if digest else "0" * 64,
        trail=events,
        exceptions=audit_exceptions(session, scope, backdated_after=backdated_after, rules=rules),
        integrity_ok=not problems,
        integrity_text="\n".join(problems)
        or f"All {full.num_rows:,} events in scope match their hashes and links.",
        complete=not gaps,
        completeness_text="; ".join(gaps)
        or f"No gaps: positions 1..{top:,} are all present"
        + ("; the stream's versions run 1.." + str(full.num_rows) if scope.kind == "entity" else "")
        + ".",
        command=command,
        checkpoint=checkpoint,
        projection=projection,
        history=history,
        as_of=digest[0][1] if digest else None,
    )
