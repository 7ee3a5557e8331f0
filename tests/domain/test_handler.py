"""The command handler: metadata, causation trees, retries, bounded folds, snapshots,
upcasting."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.domain import CommandContext, CommandHandler, Decider, EventCodec
from esanalytics.domain import accounts as a
from esanalytics.exceptions import UnknownEventTypeError


def test_metadata_flows_from_the_context(store: esa.EventStore) -> None:
    bank = CommandHandler(store, a.decider)
    context = CommandContext(
        actor="alice", reason="walk-in", source="branch", extra={"ticket": "T-1"}
    )
    result = bank.handle("account-1", a.OpenAccount("Ada"), context=context)
    event = store.read_stream("account-1").to_list()[0]
    meta = event.metadata
    assert (meta["actor"], meta["reason"], meta["source"], meta["ticket"]) == (
        "alice",
        "walk-in",
        "branch",
        "T-1",
    )
    assert meta["command_id"] == result.command_id
    assert meta["correlation_id"] == result.correlation_id == result.command_id  # new chain
    assert meta["causation_id"] == result.command_id
    assert event.event_id == result.event_ids[0]
    assert meta["command"] == "OpenAccount"


def test_causation_links_of_a_correlation_form_a_tree(store: esa.EventStore) -> None:
    bank = CommandHandler(store, a.decider)
    root = bank.handle(
        "account-1", a.OpenAccount("Ada", 100), context=CommandContext(actor="alice")
    )
    first = bank.handle("account-1", a.DepositMoney(50), context=root.next_context())
    branch_a = bank.handle(
        "account-2", a.OpenAccount("Bob"), context=first.next_context(actor="bob")
    )
    branch_b = bank.handle("account-1", a.WithdrawMoney(20), context=first.next_context())
    bank.handle("account-2", a.DepositMoney(5), context=branch_a.next_context())
    bank.handle("account-1", a.DepositMoney(1), context=branch_b.next_context())
    bank.handle("account-3", a.OpenAccount("Eve"))  # another chain
    chain = [e for e in store.read_all() if e.metadata["correlation_id"] == root.correlation_id]
    assert len(chain) == 6
    ids = {e.event_id: e for e in chain}
    commands = {e.metadata["command_id"] for e in chain}
    roots = [e for e in chain if e.metadata["causation_id"] not in ids]
    assert [r.metadata["causation_id"] for r in roots] == [root.command_id]
    assert all(
        e.metadata["causation_id"] in ids or e.metadata["causation_id"] in commands for e in chain
    )
    for event in chain:  # following causes always ends at the root: no cycles
        seen, current = set(), event
        while current.metadata["causation_id"] in ids:
            assert current.event_id not in seen
            seen.add(current.event_id)
            current = ids[current.metadata["causation_id"]]
        assert current in roots


def _depositor(path: str, count: int) -> int:
    bank = CommandHandler(esa.open(path), a.decider, max_retries=1_000)
    retries = 0
    for _ in range(count):
        retries += bank.handle("account-1", a.DepositMoney(1.0)).retries
    return retries


def test_conflicts_between_processes_are_retried(lake: Path) -> None:
    store = esa.open(lake, create=True)
    CommandHandler(store, a.decider).handle("account-1", a.OpenAccount("Ada"))
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        retries = pool.starmap(_depositor, [(str(lake), 60), (str(lake), 60)])
    state = CommandHandler(esa.open(lake), a.decider).state("account-1")
    assert state.balance == 120.0
    assert esa.open(lake).stream_version("account-1") == 121
    assert sum(retries) >= 0  # how many depends on timing; the totals above must hold regardless


def test_retries_are_bounded(lake: Path) -> None:
    store = esa.open(lake, create=True)
    rival = esa.open(lake)
    rival.append("account-1", [esa.NewEvent("AccountOpened", {"owner": "Ada"})])

    def decide_while_someone_writes(command: Any, state: a.AccountState) -> list[Any]:
        rival.append(
            "account-1", [esa.NewEvent("MoneyDeposited", {"amount": 1.0}, schema_version=2)]
        )
        return a.decide(command, state)

    contested = Decider(name="account", version=1, initial=a.AccountState(), evolve=a.evolve,
                        decide=decide_while_someone_writes, codec=a.codec)  # fmt: skip
    with pytest.raises(esa.ConcurrencyError):
        CommandHandler(store, contested, max_retries=2).handle("account-1", a.DepositMoney(5))
    assert store.stream_version("account-1") == 4  # the rival's three deposits, not ours
    assert all(e.metadata == {} for e in store.read_stream("account-1"))


steps = st.lists(
    st.tuples(st.sampled_from(["deposit", "withdraw"]), st.integers(1, 500), st.integers(0, 40)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, cut=st.integers(0, 45), every=st.integers(1, 6))
def test_bounded_folds_and_snapshots_match_a_plain_fold(tmp_path: Path, steps: list[tuple[str, int, int]],
                                                         cut: int, every: int) -> None:  # fmt: skip
    lake = tmp_path / f"lake-{len(list(tmp_path.iterdir()))}"
    store = esa.open(lake, create=True)
    bank = CommandHandler(store, a.decider, snapshot_every=every)
    base = datetime(2024, 1, 1, tzinfo=UTC)
    bank.handle("account-1", a.OpenAccount("Ada", overdraft_limit=10_000))
    history = []  # (version, occurred, signed amount) by an independent reckoning
    snapshot_due = every == 1  # the open, at version 1
    for kind, amount, days_back in steps:
        occurred = base + timedelta(days=40 - days_back)
        event = (
            a.MoneyDeposited(float(amount))
            if kind == "deposit"
            else a.MoneyWithdrawn(float(amount))
        )
        name, schema, data = a.codec.encode(event)
        commit = store.append(
            "account-1", [esa.NewEvent(name, data, occurred_at=occurred, schema_version=schema)]
        )
        history.append((commit.version, occurred, amount if kind == "deposit" else -amount))
        result = bank.handle("account-1", a.DepositMoney(1.0))  # through the handler: snapshots
        history.append((result.version, None, 1))
        snapshot_due = snapshot_due or result.version % every == 0
    # Now: equal with and without snapshots.
    with_snapshot = bank.load("account-1")
    assert with_snapshot.state == bank.load("account-1", use_snapshot=False).state
    assert with_snapshot.state.balance == sum(h[2] for h in history)
    assert (with_snapshot.from_snapshot is not None) == snapshot_due
    # At a version: the first `cut` events.
    version = min(cut, len(history)) + 1
    expected = sum(h[2] for h in history if h[0] <= version)
    assert bank.load("account-1", version=version).state.balance == expected
    # At a valid time: events that occurred by then, in (occurred_at, version) order.
    valid_at = base + timedelta(days=cut)
    records = store.read_stream("account-1").to_list()
    plain = sum(
        (r.data["amount"] if r.event_type == "MoneyDeposited" else -r.data["amount"])
        for r in records
        if r.event_type != "AccountOpened" and r.occurred_at <= valid_at
    )
    got = bank.load("account-1", valid_at=valid_at).state
    assert got.balance == round(plain, 2)
    assert got.status == ("open" if records[0].occurred_at <= valid_at else "none")


def test_snapshot_from_another_decider_version_is_ignored(store: esa.EventStore) -> None:
    bank = CommandHandler(store, a.decider, snapshot_every=2)
    for command in [a.OpenAccount("Ada"), a.DepositMoney(5), a.DepositMoney(6)]:
        bank.handle("account-1", command)
    assert bank.load("account-1").from_snapshot == 2

    @dataclass(frozen=True)
    class Shape2:  # the state's shape changed in version 2 of the code
        cents: int = 0

    def evolve2(state: Shape2, event: Any) -> Shape2:
        return Shape2(state.cents + round(getattr(event, "amount", 0) * 100))

    newer = Decider(
        name="account", version=2, initial=Shape2(), evolve=evolve2, decide=a.decide, codec=a.codec
    )
    loaded = CommandHandler(store, newer).load("account-1")
    assert loaded.from_snapshot is None
    assert loaded.state == Shape2(1100)


@dataclass(frozen=True)
class Renamed:  # v3: {"full_name": ..., "tier": ...}
    full_name: str
    tier: str


def test_upcasting_chains_and_unknown_types(store: esa.EventStore) -> None:
    codec = EventCodec(
        [Renamed],
        schema_versions={"Renamed": 3},
        upcasters={
            ("Renamed", 1): lambda d: {"full_name": d["name"]},
            ("Renamed", 2): lambda d: {**d, "tier": "basic"},
        },
    )
    store.append("person-1", [
        esa.NewEvent("Renamed", {"name": "Ada"}, schema_version=1),
        esa.NewEvent("Renamed", {"full_name": "Ada L"}, schema_version=2),
        esa.NewEvent("Renamed", {"full_name": "Ada K", "tier": "gold"}, schema_version=3),
    ])  # fmt: skip
    decoded = [codec.decode_record(e) for e in store.read_stream("person-1")]
    assert decoded == [Renamed("Ada", "basic"), Renamed("Ada L", "basic"), Renamed("Ada K", "gold")]
    with pytest.raises(UnknownEventTypeError, match="newer code"):
        codec.decode("Renamed", 4, {})
    with pytest.raises(UnknownEventTypeError, match="No upcaster"):
        EventCodec([Renamed], schema_versions={"Renamed": 2}).decode("Renamed", 1, {"name": "x"})
    with pytest.raises(UnknownEventTypeError, match="does not know") as caught:
        codec.decode("Vanished", 1, {})
    assert "unknown='skip'" in str(caught.value)
    assert EventCodec([Renamed], unknown="skip").decode("Vanished", 1, {}) is None


def test_cached_state_never_hides_another_writer(lake: Path) -> None:
    esa.open(lake, create=True)
    first = CommandHandler(esa.open(lake), a.decider)
    second = CommandHandler(esa.open(lake), a.decider)
    first.handle("account-1", a.OpenAccount("Ada"))
    first.handle("account-1", a.DepositMoney(10))  # first now holds balance 10 in its cache
    second.handle("account-1", a.WithdrawMoney(10))  # another handle spends it
    from esanalytics.domain import CommandRejected

    with pytest.raises(CommandRejected) as caught:
        first.handle("account-1", a.WithdrawMoney(5))
    assert caught.value.rule == "insufficient-funds"
    assert first.handle("account-1", a.DepositMoney(2)).version == 4
    assert first.state("account-1").balance == second.state("account-1").balance == 2.0
