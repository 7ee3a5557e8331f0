"""The SIGKILL harness: an import killed at 50 random moments ends with every line once.

A child process (forked from a forkserver, see ``test_import_faults.py``) imports a JSON Lines
file in batches of about 15 lines and is SIGKILLed after a random 20-400 ms (seeded), then
started again, until 50 kills have landed; the last run goes to the end (a round that ends
before that starts another on a fresh lake). After every kill the lake is checked: positions
and versions gapless, no event twice, the events exactly the valid lines up to the cursor;
with ``on_error="skip"`` the rejects file holds whole lines, each bad line at most once and
every bad line up to the cursor. At the end of each round: every valid line once, ``verify``
clean, every bad line in the rejects file exactly once, a re-run writes nothing.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest

from tests.sources.test_import_faults import (
    check_finished,
    check_lake,
    check_rejects,
    finished_or_killed,
    forkserver_context,
    good_lines,
    run_import,
    write_source,
)

KILLS = 50
LINES = 3_000
BLOCK = 2_048  # about 15 lines a batch: some 200 commits a round


@pytest.fixture(scope="module")
def forkserver() -> Any:
    return forkserver_context()


@pytest.mark.parametrize(("on_error", "seed"), [("raise", 13), ("skip", 31)])
def test_an_import_killed_50_times_at_random_moments_ends_exactly_once(
    on_error: str, seed: int, tmp_path: Path, forkserver: Any
) -> None:
    rng = random.Random(seed)
    kills, rounds, ran = 0, 0, []
    started = time.monotonic()
    while kills < KILLS:
        rounds += 1
        assert rounds <= 5, f"only {kills} kills in {rounds - 1} rounds"
        lake, source = tmp_path / f"lake{rounds}", tmp_path / f"src{rounds}.jsonl"
        bad = (
            {n for n in range(1, LINES + 1) if rng.random() < 0.02} if on_error == "skip" else set()
        )
        write_source(source, range(1, LINES + 1), bad)
        good = good_lines(source)
        lines_before = 0
        while True:
            timeout = rng.uniform(0.02, 0.4) if kills < KILLS else 120
            args = (str(lake), str(source), BLOCK, on_error, None)
            if finished_or_killed(forkserver, run_import, args, timeout):
                break
            kills += 1
            _, line = check_lake(lake, source, good=good)
            assert line >= lines_before, "the cursor went back"
            ran.append(line - lines_before)
            lines_before = line
            if on_error == "skip":
                check_rejects(lake, source, upto=line, final=False)
        check_finished(lake, source, on_error=on_error)
    print(
        f"{kills} kills in {rounds} round(s), {time.monotonic() - started:.1f} s; "
        f"{sum(1 for r in ran if r)} of them after some progress"
    )
    assert kills >= KILLS
