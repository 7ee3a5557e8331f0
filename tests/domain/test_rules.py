"""Every rule of both example domains, through the real handler and store; a rejected command
leaves the log byte for byte unchanged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from esanalytics.domain import CommandHandler, CommandRejected
from esanalytics.domain import accounts as a
from esanalytics.domain import orders as o
from tests.conftest import log_bytes


def run(handler: CommandHandler[Any], stream: str, commands: list[Any]) -> None:
    for command in commands:
        handler.handle(stream, command)


def refused(handler: CommandHandler[Any], lake: Path, stream: str, command: Any, rule: str) -> None:
    before = log_bytes(lake)
    with pytest.raises(CommandRejected) as caught:
        handler.handle(stream, command)
    assert caught.value.rule == rule
    assert "Hint:" in str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert log_bytes(lake) == before


@pytest.fixture
def bank(store: esa.EventStore) -> CommandHandler[a.AccountState]:
    return CommandHandler(store, a.decider)


@pytest.fixture
def shop(store: esa.EventStore) -> CommandHandler[o.OrderState]:
    return CommandHandler(store, o.decider)


ACCOUNT_CASES: list[tuple[str, list[Any], Any, str]] = [
    ("open twice", [a.OpenAccount("Ada")], a.OpenAccount("Bob"), "open-once"),
    ("negative limit", [], a.OpenAccount("Ada", overdraft_limit=-1), "limit-non-negative"),
    ("no account", [], a.DepositMoney(5), "exists"),
    ("zero deposit", [a.OpenAccount("Ada")], a.DepositMoney(0), "positive-amount"),
    ("negative withdrawal", [a.OpenAccount("Ada")], a.WithdrawMoney(-3), "positive-amount"),
    ("insufficient funds", [a.OpenAccount("Ada"), a.DepositMoney(10)], a.WithdrawMoney(10.01), "insufficient-funds"),
    ("beyond overdraft", [a.OpenAccount("Ada", 50), a.DepositMoney(10)], a.WithdrawMoney(60.5), "overdraft-limit"),
    ("limit below overdraft", [a.OpenAccount("Ada", 50), a.WithdrawMoney(40)], a.ChangeOverdraftLimit(30), "limit-covers-overdraft"),
    ("negative new limit", [a.OpenAccount("Ada")], a.ChangeOverdraftLimit(-5), "limit-non-negative"),
    ("deposit while frozen", [a.OpenAccount("Ada"), a.FreezeAccount()], a.DepositMoney(1), "not-frozen"),
    ("withdraw while frozen", [a.OpenAccount("Ada"), a.DepositMoney(9), a.FreezeAccount()], a.WithdrawMoney(1), "not-frozen"),
    ("limit while frozen", [a.OpenAccount("Ada"), a.FreezeAccount()], a.ChangeOverdraftLimit(10), "not-frozen"),
    ("freeze twice", [a.OpenAccount("Ada"), a.FreezeAccount()], a.FreezeAccount(), "freeze-once"),
    ("unfreeze open", [a.OpenAccount("Ada")], a.UnfreezeAccount(), "unfreeze-frozen"),
    ("close frozen", [a.OpenAccount("Ada"), a.FreezeAccount()], a.CloseAccount(), "not-frozen"),
    ("close overdrawn", [a.OpenAccount("Ada", 20), a.WithdrawMoney(5)], a.CloseAccount(), "close-not-overdrawn"),
    ("deposit after close", [a.OpenAccount("Ada"), a.CloseAccount()], a.DepositMoney(1), "not-closed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "before", "command", "rule"), ACCOUNT_CASES, ids=[c[0] for c in ACCOUNT_CASES]
)
def test_account_rules(bank: CommandHandler[a.AccountState], lake: Path, label: str,
                       before: list[Any], command: Any, rule: str) -> None:  # fmt: skip
    run(bank, "account-1", before)
    refused(bank, lake, "account-1", command, rule)


def test_account_happy_path(bank: CommandHandler[a.AccountState]) -> None:
    run(bank, "account-1", [
        a.OpenAccount("Ada", overdraft_limit=50), a.DepositMoney(100), a.WithdrawMoney(140),
        a.ChangeOverdraftLimit(40), a.FreezeAccount("2025-01-01"), a.UnfreezeAccount(),
        a.DepositMoney(60), a.CloseAccount(),
    ])  # fmt: skip
    state = bank.state("account-1")
    assert (state.status, state.balance, state.overdraft_limit) == ("closed", 0.0, 40)
    closed = bank.store.read_stream("account-1").to_list()[-1]
    assert (closed.event_type, closed.data["payout"]) == ("AccountClosed", 20.0)
    same_limit = bank.handle("account-2", a.OpenAccount("Bob", 10))
    assert same_limit.version == 1
    assert bank.handle("account-2", a.ChangeOverdraftLimit(10)).events == ()  # nothing to change


ORDER_CASES: list[tuple[str, list[Any], Any, str]] = [
    ("place twice", [o.PlaceOrder("c", 1, 10)], o.PlaceOrder("c", 1, 10), "place-once"),
    ("empty order", [], o.PlaceOrder("c", 0, 10), "non-empty"),
    ("no order", [], o.PayOrder(10), "exists"),
    ("wrong amount", [o.PlaceOrder("c", 1, 10)], o.PayOrder(9), "pay-total"),
    ("pay twice", [o.PlaceOrder("c", 1, 10), o.PayOrder(10)], o.PayOrder(10), "pay-placed"),
    ("ship unpaid", [o.PlaceOrder("c", 1, 10)], o.ShipOrder("DHL", "t"), "ship-after-payment"),
    ("deliver unshipped", [o.PlaceOrder("c", 1, 10), o.PayOrder(10)], o.DeliverOrder(), "deliver-shipped"),
    ("cancel shipped", [o.PlaceOrder("c", 1, 10), o.PayOrder(10), o.ShipOrder("DHL", "t")], o.CancelOrder(), "cancel-before-shipping"),
    ("refund unpaid", [o.PlaceOrder("c", 1, 10)], o.RefundOrder(1), "refund-paid"),
    ("refund above paid", [o.PlaceOrder("c", 1, 10), o.PayOrder(10), o.CancelOrder()], o.RefundOrder(10.01), "refund-at-most-paid"),
    ("refund twice", [o.PlaceOrder("c", 1, 10), o.PayOrder(10), o.RefundOrder(6)], o.RefundOrder(5), "refund-at-most-paid"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "before", "command", "rule"), ORDER_CASES, ids=[c[0] for c in ORDER_CASES]
)
def test_order_rules(shop: CommandHandler[o.OrderState], lake: Path, label: str,
                     before: list[Any], command: Any, rule: str) -> None:  # fmt: skip
    run(shop, "order-1", before)
    refused(shop, lake, "order-1", command, rule)


def test_order_happy_path(shop: CommandHandler[o.OrderState]) -> None:
    run(shop, "order-1", [o.PlaceOrder("c", 2, 30), o.PayOrder(30), o.ShipOrder("DHL", "t1"),
                          o.DeliverOrder(), o.RefundOrder(10), o.RefundOrder(20)])  # fmt: skip
    state = shop.state("order-1")
    assert (state.status, state.paid, state.refunded) == ("delivered", 30.0, 30.0)
