"""The sample generator: deterministic, and its events obey the domains' rules."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from esanalytics import sample
from esanalytics.exceptions import ValidationError
from esanalytics.sample import SampleSpec, generate, generate_chunks, sample_tables


@pytest.fixture(scope="module", params=["one skeleton", "in shards"])
def rows(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> list[dict[str, Any]]:
    """The events of a 40k sample, drawn whole, or (as a sample above SHARD_EVENTS is) in four
    shards spilled to disk and merged: the rules below hold for both."""
    spec = SampleSpec(events=40_000, seed=11)
    if request.param == "one skeleton":
        table = generate(spec)
    else:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(sample, "SHARD_EVENTS", 10_000)
            spill = tmp_path_factory.mktemp("spill")
            total, tables = sample_tables(spec, chunk_rows=7_000, spill=spill)
            table = pa.concat_tables(list(tables))
            assert total == table.num_rows == 40_000
            assert list(spill.iterdir()) == []  # the spilled weeks are gone
    out = table.to_pylist()
    for row in out:
        row["data"] = json.loads(row["data"])
        row["metadata"] = json.loads(row["metadata"])
    return out


def test_same_seed_same_events_other_seed_other_events() -> None:
    a = generate(SampleSpec(events=3_000, seed=5))
    b = generate(SampleSpec(events=3_000, seed=5))
    c = generate(SampleSpec(events=3_000, seed=6))
    assert a.equals(b)
    assert not a.equals(c)
    assert a.num_rows == 3_000


def test_chunks_concatenate_to_the_whole() -> None:
    spec = SampleSpec(events=5_000, seed=2)
    total, chunk = generate_chunks(spec)
    assert pa.concat_tables([chunk(0, 1_234), chunk(1_234, total)]).equals(generate(spec))


def test_sample_tables_are_the_chunks_up_to_a_shard() -> None:
    spec = SampleSpec(events=5_000, seed=2)
    total, tables = sample_tables(spec, chunk_rows=1_500)
    parts = list(tables)
    assert total == 5_000
    assert [t.num_rows for t in parts] == [1_500, 1_500, 1_500, 500]
    assert pa.concat_tables(parts).equals(generate(spec))


def test_shards_have_streams_and_ids_of_their_own(rows: list[dict[str, Any]]) -> None:
    ids = [r["event_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    opened = [r["stream_id"] for r in rows if r["event_type"] in ("AccountOpened", "OrderPlaced")]
    assert len(set(opened)) == len(opened), "no stream opens twice (in two shards)"
    owners = {r["data"]["owner"] for r in rows if r["event_type"] == "AccountOpened"}
    assert len(owners) == sum(1 for r in rows if r["event_type"] == "AccountOpened")


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValidationError, match="out of range"):
        SampleSpec(events=10)
    with pytest.raises(ValidationError, match="future"):
        SampleSpec(start=datetime(2030, 1, 1, tzinfo=UTC))


def test_times_are_ordered_and_never_in_the_future(rows: list[dict[str, Any]]) -> None:
    recorded = [r["recorded_at"] for r in rows]
    assert recorded == sorted(recorded)
    assert recorded[-1] < datetime.now(UTC)
    assert all(r["occurred_at"] <= r["recorded_at"] for r in rows)
    by_stream: dict[str, list[datetime]] = defaultdict(list)
    for r in rows:
        by_stream[r["stream_id"]].append(r["recorded_at"])
    assert all(t == sorted(set(t)) for t in by_stream.values())


def test_accounts_obey_the_rules(rows: list[dict[str, Any]]) -> None:
    accounts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["stream_id"].startswith("account-"):
            accounts[r["stream_id"]].append(r)
    assert len(accounts) > 100
    for events in accounts.values():
        assert events[0]["event_type"] == "AccountOpened"
        balance, limit, status = 0.0, events[0]["data"]["overdraft_limit"], "open"
        for e in events[1:]:
            kind, data = e["event_type"], e["data"]
            assert status != "closed", "nothing happens after closing"
            if kind == "MoneyDeposited":
                assert status == "open"
                balance += data["amount"]
            elif kind == "MoneyWithdrawn":
                assert status == "open", "no withdrawal while frozen"
                balance -= data["amount"]
                assert balance >= -limit - 1e-6, "overdraft beyond the limit"
            elif kind == "OverdraftLimitChanged":
                limit = data["overdraft_limit"]
                assert balance >= -limit - 1e-6, "limit set below the current overdraft"
            elif kind == "AccountFrozen":
                assert status == "open"
                status = "frozen"
            elif kind == "AccountUnfrozen":
                assert status == "frozen"
                status = "open"
            elif kind == "AccountClosed":
                assert abs(data["payout"] - balance) < 0.01, "the payout empties the account"
                status = "closed"
            else:
                raise AssertionError(kind)


def test_orders_follow_the_state_machine_and_causation(rows: list[dict[str, Any]]) -> None:
    orders: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["stream_id"].startswith("order-"):
            orders[r["stream_id"]].append(r)
    assert len(orders) > 50
    allowed = {
        None: {"OrderPlaced"},
        "OrderPlaced": {"OrderPaid", "OrderCancelled"},
        "OrderPaid": {"OrderShipped", "OrderCancelled"},
        "OrderShipped": {"OrderDelivered"},
        "OrderDelivered": {"OrderRefunded"},
        "OrderCancelled": {"OrderRefunded"},
        "OrderRefunded": set(),
    }
    for events in orders.values():
        state, paid = None, 0.0
        for previous, e in zip([None, *events], events, strict=False):
            assert e["event_type"] in allowed[state]
            if e["event_type"] == "OrderPaid":
                paid = e["data"]["amount"]
            if e["event_type"] == "OrderRefunded":
                assert 0 < e["data"]["amount"] <= paid, "no refund above what was paid"
            if previous is not None:
                assert e["metadata"]["causation_id"] == previous["event_id"]
                assert e["metadata"]["correlation_id"] == previous["metadata"]["correlation_id"]
            state = e["event_type"]


def test_audit_texture(rows: list[dict[str, Any]]) -> None:
    n = len(rows)
    backdated = sum(
        r["recorded_at"] - r["occurred_at"] > (r["recorded_at"] - r["recorded_at"]) for r in rows
    )
    assert 0.004 * n < backdated < 0.02 * n
    after_hours = sum(not 8 <= r["recorded_at"].hour < 19 for r in rows)
    assert after_hours > 0.03 * n
    self_approved = [r for r in rows if r["metadata"].get("approved_by") == r["metadata"]["actor"]]
    assert 0 < len(self_approved) < 0.01 * n
    assert all("reason" in r["metadata"] for r in rows if r["recorded_at"] != r["occurred_at"])
    assert {r["metadata"]["source"] for r in rows} == {"online", "branch", "batch"}
