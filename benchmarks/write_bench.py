"""Write-side benchmark: commands per second end to end (load, decide, append) on accounts
with 100 events of history, with and without snapshots, beside the `eventsourcing` library
doing the same (`repository.get`, a command method, `save`, SQLite file) in the same run.

    python3 -m uv run python benchmarks/write_bench.py [--accounts 200] [--commands 3000]

Target (issue 3): at least 5 times the peer. The last line measures batch mode
(``handle_batch``, ten times as many commands) beside the peer's own batch: each aggregate got
once, every command applied in memory, all saved with one ``save(*aggregates)``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

import esanalytics as esa
from esanalytics.domain import BatchCommand, CommandHandler, handle_batch
from esanalytics.domain import accounts as a

HISTORY = 100
_PEER: dict[Any, Any] = {}


def _peer_classes(snapshot_every: int | None) -> tuple[Any, Any]:
    """The peer's aggregate and application, defined once per process (it registers topics)."""
    if not _PEER:
        from eventsourcing.application import Application
        from eventsourcing.domain import Aggregate, event

        class BankAccount(Aggregate):
            @event("Opened")
            def __init__(self, owner: str) -> None:
                self.owner = owner
                self.balance = 0.0

            @event("Deposited")
            def deposit(self, amount: float) -> None:
                if amount <= 0:
                    raise ValueError("positive amounts only")
                self.balance += amount

        class Bank(Application):  # type: ignore[type-arg]
            pass

        class SnapshottingBank(Application):  # type: ignore[type-arg]
            snapshotting_intervals: ClassVar[Any] = {BankAccount: 50}

        _PEER.update(account=BankAccount, plain=Bank, snapshotting=SnapshottingBank)
    return _PEER["snapshotting" if snapshot_every else "plain"], _PEER["account"]


def ours(
    folder: Path,
    accounts: int,
    commands: int,
    snapshot_every: int | None,
    cache: bool,
    batch: bool = False,
) -> float:
    store = esa.open(folder / f"lake-{snapshot_every}-{cache}", create=True)
    ids = [f"account-{i}" for i in range(accounts)]
    rows = {"stream_id": [], "event_type": [], "data": [], "metadata": [], "schema_version": []}
    for stream in ids:  # 100 events of history each: opened, then 99 deposits
        for v in range(HISTORY):
            event = a.AccountOpened("owner") if v == 0 else a.MoneyDeposited(1.0)
            name, schema, data = a.codec.encode(event)
            rows["stream_id"].append(stream)
            rows["event_type"].append(name)
            rows["data"].append(json.dumps(data))
            rows["metadata"].append("{}")
            rows["schema_version"].append(schema)
    store.ingest(pa.table(rows))
    store.compact()
    bank = CommandHandler(
        store, a.decider, snapshot_every=snapshot_every, cache_size=10_000 if cache else 0
    )
    if snapshot_every:
        seed = CommandHandler(store, a.decider, snapshot_every=1)
        for stream in ids:  # snapshots at version 101, as a long-running system would have
            seed.handle(stream, a.DepositMoney(1.0))
    started = time.perf_counter()
    if batch:  # every command decided in memory, all written in one atomic ingest
        script = (BatchCommand(ids[i % accounts], a.DepositMoney(1.0)) for i in range(commands))
        handle_batch(store, {"account": a.decider}, script)
    else:
        for i in range(commands):
            bank.handle(ids[i % accounts], a.DepositMoney(1.0))
    rate = commands / (time.perf_counter() - started)
    assert bank.state(ids[0]).balance >= HISTORY - 1 + commands // accounts
    return rate


def peer(
    folder: Path,
    accounts: int,
    commands: int,
    snapshot_every: int | None,
    cache: bool,
    batch: bool = False,
) -> float:
    Bank, BankAccount = _peer_classes(snapshot_every)
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(folder / f"peer-{snapshot_every}-{cache}.sqlite"),
    }
    if cache:
        env["AGGREGATE_CACHE_MAXSIZE"] = "10000"
    if snapshot_every:
        env["IS_SNAPSHOTTING_ENABLED"] = "y"
    app = Bank(env=env)
    ids = []
    for _ in range(accounts):
        account = BankAccount("owner")
        for _ in range(HISTORY - 1):
            account.deposit(1.0)
        app.save(account)
        ids.append(account.id)
    if snapshot_every:
        for account_id in ids:
            account = app.repository.get(account_id)
            account.deposit(1.0)
            app.save(account)
            app.take_snapshot(account_id)
    started = time.perf_counter()
    if batch:  # the peer's batch: each aggregate got once, all saved in one call
        held: dict[Any, Any] = {}
        for i in range(commands):
            key = ids[i % accounts]
            if key not in held:
                held[key] = app.repository.get(key)
            held[key].deposit(1.0)
        app.save(*held.values())
    else:
        for i in range(commands):
            account = app.repository.get(ids[i % accounts])
            account.deposit(1.0)
            app.save(account)
    return commands / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--commands", type=int, default=3_000)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="esa-write-bench-"))
    print(
        f"{'commands/s, 100 events of history':38} {'esanalytics':>12} {'eventsourcing':>14} {'ratio':>7}"
    )
    cases = (
        ("replay 100 events, no snapshots", None, False, False),
        ("from snapshots (every 50)", 50, False, False),
        ("in-memory aggregate cache", None, True, False),
        ("batch mode: decide all, write once", None, False, True),
    )
    for label, every, cache, batch in cases:
        mine = ours(
            folder, args.accounts, args.commands * (10 if batch else 1), every, cache, batch
        )
        theirs = peer(
            folder, args.accounts, args.commands * (10 if batch else 1), every, cache, batch
        )
        print(f"{label:38} {mine:12,.0f} {theirs:14,.0f} {mine / theirs:6.2f}x")


if __name__ == "__main__":
    main()
