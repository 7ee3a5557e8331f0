"""Named kill points, for fault-injection tests (``tests/store/test_faults.py``).

``ESA_KILL_AT=<point>[:<n>]`` in the environment (or :func:`arm` in a forked child) makes the
process SIGKILL itself the ``n``-th time (default: the first) it reaches the named point, so a
test can stop a writer at an exact step (after a commit line is synced, before its files are
renamed...) instead of at a random moment. Unarmed, a point costs one global lookup.

The points, by operation (``<kind>`` is ``append`` for a small append held inline,
``ingest`` for an ingest or a large append written as files, ``seal`` or ``compact``)::

    commitlog.after_write        the line is written, not yet synced (any commit)
    typed.before_write           a part's events file is written and synced, its typed twin
                                 derived, not yet written (ingest, seal or compact)
    typed.after_write            the twin is written and synced, not yet named by a commit
    <kind>.before_commit         files written and synced, the commit line not yet written
    <kind>.after_commit          the commit line is synced, nothing published yet
    compact.after_retire         the replaced files are renamed away, the new one not yet in place
    <kind>.after_publish         files renamed into place, the store's checkpoint not yet saved
                                 (ingest, seal and compact)
    writer_index.before_pointer  a writer index is written, its pointer not yet swapped
    vacuum.after_delete          vacuum deleted one retired file and goes on
    refresh.after_copy           a materialized state or checkpoint is written to its temporary name
    refresh.after_state          a materialized state file is in place, its pointer not swapped
    refresh.after_pointer        the pointer is swapped, the old state file not yet deleted
    export.after_flush           a checkpoint export sealed the tail and has not yet read it
    create.before_marker         a new lake's folders and empty log exist, its lake.json not yet
    import.after_rejects         an import's rejected rows are synced, their batch not committed
    cursor.before_commit         an import read rows that add no event; its cursor-only line
                                 is not yet written
"""

from __future__ import annotations

import os
import signal

__all__ = ["arm", "kill_point"]

_armed: tuple[str, int] | None = None
_reached = 0


def arm(spec: str | None) -> None:
    """Kill at ``<point>[:<n>]`` from now on (None disarms)."""
    global _armed, _reached
    _reached = 0
    if not spec:
        _armed = None
        return
    point, _, count = spec.partition(":")
    _armed = (point, int(count or 1))


def kill_point(name: str) -> None:
    if _armed is not None and _armed[0] == name:
        _hit()


def _hit() -> None:
    global _reached
    assert _armed is not None
    _reached += 1
    if _reached == _armed[1]:
        os.kill(os.getpid(), signal.SIGKILL)


arm(os.environ.get("ESA_KILL_AT"))
