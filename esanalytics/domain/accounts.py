"""Bank accounts: an example domain, used by the sample data and the tests.

Rules: an account is opened once; deposits and withdrawals are positive; a withdrawal may not
take the balance below minus the overdraft limit; the limit may not be set below the current
overdraft; a frozen account moves no money and changes no limit; closing pays out a
non-negative balance, and a closed account accepts nothing.

>>> state = decider.fold([AccountOpened(owner="Ada", overdraft_limit=100.0),
...                       MoneyWithdrawn(amount=60.0)])
>>> state.balance, state.status
(-60.0, 'open')
>>> decider.decide(WithdrawMoney(amount=50.0), state)
Traceback (most recent call last):
...
esanalytics.domain.decider.CommandRejected: Withdrawing 50.00 would take account balance -60.00 below the overdraft limit of 100.00.
Hint: withdraw at most 40.00, or raise the overdraft limit first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from esanalytics.domain.decider import CommandRejected, Decider, EventCodec
from esanalytics.domain.duties import SegregationRule

__all__ = [
    "AccountClosed", "AccountFrozen", "AccountOpened", "AccountState", "AccountUnfrozen",
    "ChangeOverdraftLimit", "CloseAccount", "DepositMoney", "FreezeAccount", "MoneyDeposited",
    "MoneyWithdrawn", "OpenAccount", "OverdraftLimitChanged", "UnfreezeAccount", "WithdrawMoney",
    "decider",
]  # fmt: skip


# -- commands ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpenAccount:
    owner: str
    overdraft_limit: float = 0.0
    currency: str = "EUR"


@dataclass(frozen=True)
class DepositMoney:
    amount: float
    channel: str = "branch"


@dataclass(frozen=True)
class WithdrawMoney:
    amount: float
    channel: str = "branch"


@dataclass(frozen=True)
class ChangeOverdraftLimit:
    overdraft_limit: float


@dataclass(frozen=True)
class FreezeAccount:
    until: str | None = None


@dataclass(frozen=True)
class UnfreezeAccount:
    pass


@dataclass(frozen=True)
class CloseAccount:
    pass


# -- events -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AccountOpened:
    owner: str
    overdraft_limit: float = 0.0
    currency: str = "EUR"


@dataclass(frozen=True)
class MoneyDeposited:
    """Schema v2 added ``channel``; v1 events are lifted with channel ``"unknown"``."""

    amount: float
    currency: str = "EUR"
    channel: str = "unknown"


@dataclass(frozen=True)
class MoneyWithdrawn:
    """Schema v2 added ``channel``; v1 events are lifted with channel ``"unknown"``."""

    amount: float
    currency: str = "EUR"
    channel: str = "unknown"


@dataclass(frozen=True)
class OverdraftLimitChanged:
    overdraft_limit: float
    currency: str = "EUR"


@dataclass(frozen=True)
class AccountFrozen:
    until: str | None = None


@dataclass(frozen=True)
class AccountUnfrozen:
    pass


@dataclass(frozen=True)
class AccountClosed:
    payout: float
    currency: str = "EUR"


# -- state ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AccountState:
    status: str = "none"  # none, open, frozen, closed
    owner: str | None = None
    balance: float = 0.0
    overdraft_limit: float = 0.0
    currency: str = "EUR"


def _money(value: float) -> str:
    return f"{value:.2f}"


def evolve(state: AccountState, event: Any) -> AccountState:
    match event:
        case AccountOpened(owner=owner, overdraft_limit=limit, currency=currency):
            return AccountState("open", owner, 0.0, limit, currency)
        case MoneyDeposited(amount=amount):
            return replace(state, balance=round(state.balance + amount, 2))
        case MoneyWithdrawn(amount=amount):
            return replace(state, balance=round(state.balance - amount, 2))
        case OverdraftLimitChanged(overdraft_limit=limit):
            return replace(state, overdraft_limit=limit)
        case AccountFrozen():
            return replace(state, status="frozen")
        case AccountUnfrozen():
            return replace(state, status="open")
        case AccountClosed(payout=payout):
            return replace(state, status="closed", balance=round(state.balance - payout, 2))
    raise TypeError(f"not an account event: {event!r}")


def _require(ok: bool, problem: str, rule: str, hint: str) -> None:
    if not ok:
        raise CommandRejected(problem, rule=rule, hint=hint)


def decide(command: Any, state: AccountState) -> list[Any]:
    if isinstance(command, OpenAccount):
        _require(
            state.status == "none",
            "The account is already open.",
            "open-once",
            "use another account id.",
        )
        _require(
            command.overdraft_limit >= 0,
            "An overdraft limit cannot be negative.",
            "limit-non-negative",
            "pass 0 for no overdraft.",
        )
        return [AccountOpened(command.owner, float(command.overdraft_limit), command.currency)]
    _require(
        state.status != "none",
        "The account does not exist.",
        "exists",
        "open it first (OpenAccount).",
    )
    _require(
        state.status != "closed",
        "The account is closed.",
        "not-closed",
        "closed accounts accept no commands.",
    )
    match command:
        case DepositMoney(amount=amount, channel=channel):
            _require(
                amount > 0,
                f"A deposit must be positive, not {_money(amount)}.",
                "positive-amount",
                "pass an amount above 0.",
            )
            _require(
                state.status == "open", "The account is frozen.", "not-frozen", "unfreeze it first."
            )
            return [MoneyDeposited(float(amount), state.currency, channel)]
        case WithdrawMoney(amount=amount, channel=channel):
            _require(
                amount > 0,
                f"A withdrawal must be positive, not {_money(amount)}.",
                "positive-amount",
                "pass an amount above 0.",
            )
            _require(
                state.status == "open", "The account is frozen.", "not-frozen", "unfreeze it first."
            )
            available = state.balance + state.overdraft_limit
            if amount > available + 1e-9:
                problem = (
                    f"Withdrawing {_money(amount)} would take account balance {_money(state.balance)} "
                    f"below the overdraft limit of {_money(state.overdraft_limit)}."
                )
                raise CommandRejected(
                    problem
                    if state.overdraft_limit
                    else problem.replace(
                        f"below the overdraft limit of {_money(state.overdraft_limit)}",
                        "below zero",
                    ),
                    rule="insufficient-funds" if not state.overdraft_limit else "overdraft-limit",
                    hint=f"withdraw at most {_money(max(available, 0))}, or raise the overdraft limit first.",
                )
            return [MoneyWithdrawn(float(amount), state.currency, channel)]
        case ChangeOverdraftLimit(overdraft_limit=limit):
            _require(
                limit >= 0,
                "An overdraft limit cannot be negative.",
                "limit-non-negative",
                "pass 0 for none.",
            )
            _require(
                state.status == "open", "The account is frozen.", "not-frozen", "unfreeze it first."
            )
            _require(
                state.balance >= -limit,
                f"The account is overdrawn by {_money(-state.balance)}, more than "
                f"the new limit {_money(limit)}.",
                "limit-covers-overdraft",
                "bring the balance up first, or choose a higher limit.",
            )
            if limit == state.overdraft_limit:
                return []
            return [OverdraftLimitChanged(float(limit), state.currency)]
        case FreezeAccount(until=until):
            _require(
                state.status == "open",
                "The account is already frozen.",
                "freeze-once",
                "nothing to do.",
            )
            return [AccountFrozen(until)]
        case UnfreezeAccount():
            _require(
                state.status == "frozen",
                "The account is not frozen.",
                "unfreeze-frozen",
                "nothing to do.",
            )
            return [AccountUnfrozen()]
        case CloseAccount():
            _require(
                state.status == "open",
                "A frozen account cannot be closed.",
                "not-frozen",
                "unfreeze it first.",
            )
            _require(
                state.balance >= 0,
                f"The account is overdrawn by {_money(-state.balance)}.",
                "close-not-overdrawn",
                "deposit at least the overdraft before closing.",
            )
            return [AccountClosed(state.balance, state.currency)]
    raise TypeError(f"not an account command: {command!r}")  # fmt: skip


def _add_channel(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "channel": data.get("channel", "unknown")}


codec = EventCodec(
    [AccountOpened, MoneyDeposited, MoneyWithdrawn, OverdraftLimitChanged, AccountFrozen,
     AccountUnfrozen, AccountClosed],
    schema_versions={"MoneyDeposited": 2, "MoneyWithdrawn": 2},
    upcasters={("MoneyDeposited", 1): _add_channel, ("MoneyWithdrawn", 1): _add_channel},
    sql_upcasters={
        ("MoneyDeposited", 1): """json_merge_patch('{"channel": "unknown"}', data)""",
        ("MoneyWithdrawn", 1): """json_merge_patch('{"channel": "unknown"}', data)""",
    },
)  # fmt: skip

decider: Decider[AccountState] = Decider(
    name="account", version=1, initial=AccountState(), evolve=evolve, decide=decide, codec=codec,
    category="account",
    # Four eyes on a freeze: whoever froze an account does not lift the freeze.
    segregation=(SegregationRule("AccountFrozen", "AccountUnfrozen", "freeze-and-unfreeze"),),
)  # fmt: skip
