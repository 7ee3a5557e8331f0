"""One balance, one meaning: the shipped projections agree with the domains' own folds, for
every entity of a sample lake, now and at a past cut."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from esanalytics.catalog import account_balances, order_status
from esanalytics.domain import Decider, accounts, orders
from esanalytics.engine import Session
from esanalytics.projections import Projection

CUT = "2024-09-01T00:00:00Z"


def folded(store: esa.EventStore, decider: Decider[Any], as_of: str | None) -> dict[str, Any]:
    """Each stream of the decider's category, folded by the write side's own evolve."""
    events: dict[str, list[Any]] = defaultdict(list)
    for record in store.read_all(as_of=as_of):
        if record.category == decider.category:
            events[record.stream_id].append(decider.codec.decode_record(record))
    return {key: decider.fold(typed) for key, typed in events.items()}


def projected(store: esa.EventStore, projection: Projection, as_of: str | None) -> dict[str, Any]:
    rows = projection.state(Session(store), as_of=as_of).df().to_dict("records")
    return {row["key"]: row for row in rows}


@pytest.mark.parametrize("as_of", [None, CUT])
def test_account_balances_equal_the_account_fold(sample_lake: Path, as_of: str | None) -> None:
    store = esa.open(sample_lake)
    by_fold = folded(store, accounts.decider, as_of)
    by_sql = projected(store, account_balances, as_of)
    assert set(by_sql) == set(by_fold)
    assert len(by_fold) > 100
    closed = 0
    for key, state in by_fold.items():
        row = by_sql[key]
        assert float(row["balance"]) == pytest.approx(state.balance, abs=0.005), key
        assert row["status"] == state.status, key
        assert row["owner"] == state.owner, key
        assert float(row["overdraft_limit"]) == pytest.approx(state.overdraft_limit), key
        closed += state.status == "closed"
    assert closed > 5 or as_of is not None  # closing payouts are part of what was checked


@pytest.mark.parametrize("as_of", [None, CUT])
def test_order_status_equals_the_order_fold(sample_lake: Path, as_of: str | None) -> None:
    store = esa.open(sample_lake)
    by_fold = folded(store, orders.decider, as_of)
    by_sql = projected(store, order_status, as_of)
    assert set(by_sql) == set(by_fold)
    assert len(by_fold) > 20
    for key, state in by_fold.items():
        row = by_sql[key]
        assert row["status"] == state.status, key
        assert row["customer"] == state.customer, key
        assert float(row["total"]) == pytest.approx(state.total, abs=0.005), key
        assert float(row["paid"]) == pytest.approx(state.paid, abs=0.005), key
        assert float(row["refunded"]) == pytest.approx(state.refunded, abs=0.005), key


def test_a_closed_account_reads_zero_everywhere(lake: Path) -> None:
    store = esa.open(lake, create=True)
    from esanalytics.domain import CommandHandler

    bank = CommandHandler(store, accounts.decider)
    bank.handle("account-42", accounts.OpenAccount(owner="Ada"))
    bank.handle("account-42", accounts.DepositMoney(amount=10209.87))
    bank.handle("account-42", accounts.CloseAccount())
    row = projected(store, account_balances, None)["account-42"]
    assert (float(row["balance"]), row["status"]) == (0.0, "closed")
    assert float(row["paid_out"]) == 10209.87
    assert bank.state("account-42").balance == 0.0


def test_cli_state_of_a_closed_account_says_what_the_domain_says(sample_lake: Path) -> None:
    import json

    from tests.conftest import run_esa

    store = esa.open(sample_lake)
    closed = sorted(
        k for k, s in folded(store, accounts.decider, None).items() if s.status == "closed"
    )
    done = run_esa(
        "state", str(sample_lake), "account_balances", "--key", closed[0], "--format", "json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["balance"] in (0, "0", "0.00", 0.0)
