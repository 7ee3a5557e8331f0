"""Batch mode: many commands decided in memory by the same deciders, written atomically;
the sample lake is produced this way, and its fast path writes the same events."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

import esanalytics as esa
from esanalytics.domain import (
    BatchCommand,
    CommandContext,
    CommandHandler,
    CommandRejected,
    handle_batch,
)
from esanalytics.domain import accounts as a
from esanalytics.domain import orders as o
from esanalytics.exceptions import ConcurrencyError, ValidationError
from esanalytics.sample import DECIDERS, SampleSpec, commands, generate
from tests.conftest import log_bytes


def test_the_sample_written_through_the_deciders_equals_the_fast_path(lake: Path) -> None:
    """Every sample command is decided by the real deciders; what they decide is the very
    event the vectorized generator writes (same ids, times, types, who and why, and the
    same typed event once decoded by the domain's codec)."""
    plan = generate(SampleSpec(events=20_000, seed=3))
    store = esa.open(lake, create=True)
    report = handle_batch(store, DECIDERS, commands(plan), chunk_events=7_000)
    assert (report.commands, report.events, report.commits, report.rejected) == (
        20_000, 20_000, 3, []
    )  # fmt: skip
    got = store.read_all().table
    for column in ("stream_id", "event_id", "event_type", "occurred_at", "recorded_at"):
        assert got[column].to_pylist() == plan[column].to_pylist(), column
    codecs = {"account": a.codec, "order": o.codec}
    for mine, fast in zip(got.to_pylist(), plan.to_pylist(), strict=True):
        assert json.loads(mine["metadata"]) == json.loads(fast["metadata"])
        codec = codecs[mine["stream_id"].split("-")[0]]
        assert codec.decode(mine["event_type"], mine["schema_version"], json.loads(mine["data"])) \
            == codec.decode(fast["event_type"], 1, json.loads(fast["data"]))  # fmt: skip
    # And the batch path is the same fold as the one-at-a-time handler.
    bank = CommandHandler(store, a.decider)
    for stream in ("account-1", "account-17"):
        replayed = a.decider.fold(a.codec.decode_record(e) for e in store.read_stream(stream))
        assert bank.state(stream) == replayed


def _script() -> list[BatchCommand]:
    ctx = CommandContext(actor="alice", reason="import")
    return [
        BatchCommand("account-1", a.OpenAccount("Ada", 50.0), ctx),
        BatchCommand("account-2", a.OpenAccount("Bo"), ctx),
        BatchCommand("account-1", a.WithdrawMoney(40.0), ctx),
        BatchCommand("account-2", a.WithdrawMoney(1.0), ctx),  # insufficient funds
        BatchCommand("account-1", a.CloseAccount(), ctx),  # overdrawn: cannot close
        BatchCommand("account-1", a.DepositMoney(40.0), ctx),
    ]


def test_a_rejected_command_writes_nothing_of_its_chunk(store: esa.EventStore) -> None:
    handle_batch(store, DECIDERS, [BatchCommand("account-9", a.OpenAccount("Cy"))])
    before = log_bytes(store.path)
    with pytest.raises(CommandRejected) as caught:
        handle_batch(store, DECIDERS, _script())
    assert caught.value.rule == "insufficient-funds"
    assert log_bytes(store.path) == before


def test_collected_rejections_skip_only_their_command(store: esa.EventStore) -> None:
    report = handle_batch(store, DECIDERS, _script(), on_reject="collect")
    assert [(r.index, r.stream_id, r.rule) for r in report.rejected] == [
        (3, "account-2", "insufficient-funds"),
        (4, "account-1", "close-not-overdrawn"),
    ]
    assert report.events == 4
    bank = CommandHandler(store, a.decider)
    assert bank.state("account-1").balance == 0.0
    meta = store.read_stream("account-1").to_list()[-1].metadata
    assert (meta["actor"], meta["reason"], meta["command"]) == ("alice", "import", "DepositMoney")
    assert meta["correlation_id"] == meta["causation_id"] == meta["command_id"]


def test_a_batch_continues_streams_already_in_the_log(store: esa.EventStore) -> None:
    bank = CommandHandler(store, a.decider)
    bank.handle("account-1", a.OpenAccount("Ada"))
    bank.handle("account-1", a.DepositMoney(10.0))
    report = handle_batch(store, DECIDERS, [BatchCommand("account-1", a.WithdrawMoney(10.0))])
    assert report.events == 1
    assert store.stream_version("account-1") == 3
    with pytest.raises(CommandRejected) as caught:
        handle_batch(store, DECIDERS, [BatchCommand("account-1", a.WithdrawMoney(0.01))])
    assert caught.value.rule == "insufficient-funds"


def test_another_writer_in_the_middle_of_a_batch_is_a_conflict(store: esa.EventStore) -> None:
    other = esa.open(store.path)
    handle_batch(store, DECIDERS, [BatchCommand("account-1", a.OpenAccount("Ada"))])

    def script() -> Iterator[BatchCommand]:
        yield BatchCommand("account-1", a.DepositMoney(5.0))
        # Another process appends after the batch loaded account-1 at version 1.
        CommandHandler(other, a.decider).handle("account-1", a.DepositMoney(1.0))
        yield BatchCommand("account-1", a.DepositMoney(7.0))

    before = log_bytes(store.path)
    with pytest.raises(ConcurrencyError, match="at version 2, but the append expected 1"):
        handle_batch(store, DECIDERS, script())
    after = store.read_stream("account-1")
    assert [e.data["amount"] for e in after if e.event_type == "MoneyDeposited"] == [1.0]
    assert log_bytes(store.path) != before  # only the other writer's event landed


def test_bad_batches_name_the_problem(store: esa.EventStore) -> None:
    with pytest.raises(ValidationError, match="No decider handles the stream 'ledger-1'") as e:
        handle_batch(store, DECIDERS, [BatchCommand("ledger-1", a.OpenAccount("Ada"))])
    assert "Hint:" in str(e.value)
    with pytest.raises(ValidationError, match="decided 1 events but pins 2 event ids"):
        handle_batch(
            store, DECIDERS, [BatchCommand("account-1", a.OpenAccount("A"), event_ids=("x", "y"))]
        )
    mixed = [
        BatchCommand("account-1", a.OpenAccount("A"), recorded_at="2024-01-01T00:00:00Z"),
        BatchCommand("account-2", a.OpenAccount("B")),
    ]
    with pytest.raises(ValidationError, match="some do not"):
        handle_batch(store, DECIDERS, mixed)
    assert store.read_all().table.num_rows == 0
