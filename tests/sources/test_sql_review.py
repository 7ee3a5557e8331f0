"""A second reading of the SQL event store imports, as a demanding user would use them: the
faults it found, each proven here against a real SQLite file, a real PostgreSQL cluster
(tests/postgres.py) or the real ``esa`` program, with the library's own reading or plain SQL
as the independent answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

import esanalytics as esa
from esanalytics.sources.importer import import_events


class Lamp(Aggregate):
    """An aggregate whose events carry no attributes of their own (``Lamp.Switched``)."""

    @event("Installed")
    def __init__(self) -> None:
        pass

    @event("Switched")
    def switch(self) -> None:
        pass


def lamps(env: dict[str, str], count: int) -> list[Any]:
    """Install ``count`` lamps, switch each twice; the notifications as the library reads them."""
    app = Application[Any](env=env)
    try:
        for _ in range(count):
            lamp = Lamp()
            lamp.switch()
            lamp.switch()
            app.save(lamp)
        return list(app.recorder.select_notifications(start=1, limit=10_000))
    finally:
        app.close()


def test_events_with_no_attributes_of_their_own_are_read(tmp_path: Path) -> None:
    # the library stores such an event's state as the timestamp alone
    # ({"timestamp":{...}}) or with the aggregate's class ({..., "originator_topic":"..."})
    path = tmp_path / "lamps.sqlite"
    notifications = lamps(
        {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)}, 3
    )
    summary = import_events(tmp_path / "lake", f"sqlite:///{path}", create=True)
    assert summary.events == len(notifications) == 9
    events = esa.open(tmp_path / "lake").read_all().to_arrow().to_pylist()
    assert [e["event_type"] for e in events] == [n.topic.partition(":")[2] for n in notifications]
    assert [json.loads(e["data"]) for e in events] == [{}] * 9
    assert [json.loads(e["metadata"])["source_version"] for e in events] == [
        n.originator_version for n in notifications
    ]
