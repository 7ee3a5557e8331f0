"""Crash safety: SIGKILL a writer at random moments, at least 200 times, and check the log."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
import uuid
from pathlib import Path

import pyarrow.compute as pc

import esanalytics as esa
from esanalytics.events import GENESIS_HASH, canonical_rows, chain_hashes

KILLS = 200


def _writer(path: str, journal: str, seed: int) -> None:
    """Append forever, writing an intent line before each append and an ack line after."""
    store = esa.open(path)
    rng = random.Random(seed)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    while True:
        roll = rng.random()
        if roll < 0.05:
            store.flush()
            continue
        if roll < 0.07:
            store.compact()
            continue
        size = 1_200 if roll < 0.10 else rng.randint(1, 4)  # large appends go through files
        stream = f"account-{rng.randint(1, 5)}"
        ids = [str(uuid.uuid4()) for _ in range(size)]
        events = [
            esa.NewEvent("MoneyDeposited", {"amount": i}, event_id=e) for i, e in enumerate(ids)
        ]
        os.write(fd, json.dumps({"intent": ids}).encode() + b"\n")
        store.append(stream, events)
        os.write(fd, json.dumps({"ack": ids[0]}).encode() + b"\n")


def _check(path: Path, journal: Path, *, full_chain: bool) -> int:
    """Check the log against the journal; return how many appends were cut by a kill."""
    store = esa.open(path)
    table = store.read_all().to_arrow()
    n = table.num_rows
    assert table["global_position"].to_pylist() == list(range(1, n + 1)), "positions have gaps"
    present = set(table["event_id"].to_pylist())
    assert len(present) == n, "an event id appears twice"
    acked = set()
    intents = {}
    lines = journal.read_text().splitlines()
    for index, line in enumerate(lines):
        try:
            record = json.loads(line)
        except ValueError:
            # The kill cut the journal's own write of an intent (a large append's is ~46 KB):
            # that append never started. Only the last line can be cut; it is dropped.
            assert index == len(lines) - 1, "a journal line other than the last is torn"
            data = journal.read_bytes()
            journal.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1])  # drop it
            continue
        if "intent" in record:
            intents[record["intent"][0]] = record["intent"]
        else:
            acked.add(record["ack"])
    cut = 0
    for first, ids in intents.items():
        found = sum(i in present for i in ids)
        if first in acked:
            assert found == len(ids), "an acknowledged append is missing"
        else:
            assert found in (0, len(ids)), "part of an append is visible"
            cut += 1
    for stream in pc.unique(table["stream_id"]).to_pylist():
        versions = table.filter(pc.field("stream_id") == stream)["version"].to_pylist()
        assert versions == list(range(1, len(versions) + 1)), f"{stream} has version gaps"
    hashes = table["hash"].to_pylist()
    assert table["prev_hash"].to_pylist() == [GENESIS_HASH, *hashes][:n], "the chain is broken"
    if full_chain and n:
        _, recomputed = chain_hashes(canonical_rows(table), GENESIS_HASH)
        assert recomputed.to_pylist() == hashes
    return cut


def test_sigkill_during_appends_never_loses_or_tears(lake: Path, tmp_path: Path) -> None:
    esa.open(lake, create=True)
    journal = tmp_path / "journal.jsonl"
    journal.touch()
    context = multiprocessing.get_context("fork")
    rng = random.Random(2024)
    for kill in range(KILLS):
        child = context.Process(target=_writer, args=(str(lake), str(journal), kill))
        child.start()
        time.sleep(rng.uniform(0.002, 0.06))
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join()
        assert child.exitcode == -signal.SIGKILL
        cut = _check(lake, journal, full_chain=kill % 25 == 24)
        # The next append, from a fresh handle, succeeds and continues the log.
        store = esa.open(lake)
        head = store.head
        commit = store.append("account-0", [esa.NewEvent("Probe", {"kill": kill})])
        assert commit.first_position == head + 1
    assert _check(lake, journal, full_chain=True) == cut
    # Kills landed inside appends (not only between them), and the debris they left behind
    # is cleaned by the next writer.
    assert cut >= KILLS // 2
    esa.open(lake).append("account-0", [esa.NewEvent("Probe", {})])
    assert list(lake.rglob(".a*.parquet.tmp")) == []
    # Every commit line that survived links to the one before it, whichever process wrote it
    # after whichever crash, and the quick file-digest proof agrees with the deep one.
    from esanalytics.audit import verify

    esa.open(lake).flush()
    quick, deep = verify(esa.open(lake)), verify(esa.open(lake), deep=True)
    assert (quick.ok, quick.method) == (True, "files"), str(quick)
    assert (deep.ok, deep.events, deep.digest) == (True, quick.events, quick.digest), str(deep)
