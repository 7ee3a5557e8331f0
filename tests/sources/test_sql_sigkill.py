"""An import from an ``eventsourcing`` store SIGKILLed at random moments, then resumed, ends
with every stored event exactly once (the pattern of test_import_sigkill.py, with a few kills).

The child imports in batches of 40 rows (some 50 commits) and is killed after a random
0.3-1.5 s (seeded; a child takes some 0.3 s to start importing). After every kill the lake holds exactly the library's notifications up to
the import's cursor, in their order, each once; the last run goes to the end, ``verify`` is
clean and a further run writes nothing.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from tests.conftest import log_bytes
from tests.sources.eventsourcing_app import bank, postgres_env, sqlite_env
from tests.sources.test_import_faults import finished_or_killed, forkserver_context

KILLS = 4
ACCOUNTS = 300  # 2,100 events
BATCH = 40


def run_import(lake: str, url: str) -> None:
    """The child: import in small batches, creating the lake if needed."""
    from esanalytics.sources.sql import open_sql_source

    esa.import_events(lake, open_sql_source(url, batch_rows=BATCH), name="bank", create=True)


@pytest.fixture(scope="module")
def forkserver() -> Any:
    return forkserver_context()


def library_rows(env: dict[str, str]) -> list[tuple[int, str, int]]:
    """(notification id, originator id, version) of every stored event, as the library reads
    them."""
    with bank(env) as app:
        notifications = app.recorder.select_notifications(start=1, limit=100_000)
    return [(n.id, str(n.originator_id), n.originator_version) for n in notifications]


def check(lake: Path, rows: list[tuple[int, str, int]]) -> int:
    """The lake holds exactly the rows up to the cursor, in order, once; the cursor's position."""
    if not (lake / "_esa" / "lake.json").exists():
        return 0
    store = esa.open(lake)
    cursor = store.cursor("bank")
    position = int(cursor["at"]["position"]) if cursor else 0
    events = store.read_all().to_arrow().to_pylist()
    assert [e["global_position"] for e in events] == list(range(1, len(events) + 1))
    assert len({e["event_id"] for e in events}) == len(events), "an event twice"
    got = [(e["stream_id"], json.loads(e["metadata"])["source_version"]) for e in events]
    assert got == [(o, v) for n, o, v in rows if n <= position], "not the rows up to the cursor"
    return position


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_import_killed_at_random_moments_ends_exactly_once(
    kind: str, tmp_path: Path, forkserver: Any, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        path = tmp_path / "bank.sqlite"
        env, url = sqlite_env(path), f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_url")
        env = postgres_env(url)
    with bank(env) as app:
        for n in range(ACCOUNTS):
            app.open(f"owner-{n}", deposits=6)
    rows = library_rows(env)
    lake = tmp_path / "lake"
    rng = random.Random(7)
    kills, position, moved = 0, 0, 0
    for _ in range(40):
        timeout = rng.uniform(0.3, 1.5) if kills < KILLS else 120
        if finished_or_killed(forkserver, run_import, (str(lake), url), timeout):
            if kills >= KILLS:
                break
            shutil.rmtree(lake)  # it finished before a kill: start again from nothing
            position = 0
            continue
        kills += 1
        now = check(lake, rows)
        assert now >= position, "the cursor went back"
        moved += now > position
        position = now
    assert kills >= KILLS
    assert check(lake, rows) == rows[-1][0]
    from esanalytics.audit import verify

    assert verify(esa.open(lake), deep=True).ok
    before = log_bytes(lake)
    run_import(str(lake), url)
    assert log_bytes(lake) == before
    print(f"{kills} kills, {moved} after some progress")
