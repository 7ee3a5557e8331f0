"""Projections that ship for the example domains (accounts, orders), by name, and the
segregation-of-duties rules those domains declare.

>>> sorted(PROJECTIONS)
['account_balances', 'order_status']
>>> [rule.name for rule in SEGREGATION_RULES]
['freeze-and-unfreeze', 'cancel-and-refund']
"""

from __future__ import annotations

from esanalytics.domain import SegregationRule, accounts, orders
from esanalytics.exceptions import ValidationError
from esanalytics.projections import Count, First, Last, Max, Projection, Sum, const, data

__all__ = ["PROJECTIONS", "SEGREGATION_RULES", "projection"]

_ACCOUNT_STATUS = {
    "AccountOpened": "open",
    "AccountFrozen": "frozen",
    "AccountUnfrozen": "open",
    "AccountClosed": "closed",
}
_ORDER_STATUS = {
    "OrderPlaced": "placed",
    "OrderPaid": "paid",
    "OrderShipped": "shipped",
    "OrderDelivered": "delivered",
    "OrderCancelled": "cancelled",
}


def _status(mapping: dict[str, str]) -> str:
    cases = " ".join(f"WHEN {const(k)} THEN {const(v)}" for k, v in mapping.items())
    return f"CASE event_type {cases} END"


account_balances = Projection(
    "account_balances",
    {
        "owner": Last(data("owner"), on=["AccountOpened"]),
        "status": Last(_status(_ACCOUNT_STATUS), on=list(_ACCOUNT_STATUS)),
        # The domain's balance (esanalytics.domain.accounts): closing pays the balance out.
        "balance": Sum(
            f"CASE event_type WHEN 'AccountClosed' THEN {data('payout', 'DECIMAL(18,2)')} "
            f"ELSE {data('amount', 'DECIMAL(18,2)')} END",
            on={"MoneyDeposited": 1, "MoneyWithdrawn": -1, "AccountClosed": -1},
        ),
        "paid_out": Sum(data("payout", "DECIMAL(18,2)"), on={"AccountClosed": 1}),
        "overdraft_limit": Last(
            data("overdraft_limit", "DECIMAL(18,2)"), on=["AccountOpened", "OverdraftLimitChanged"]
        ),
        "deposits": Count(on=["MoneyDeposited"]),
        "largest_deposit": Max(data("amount", "DECIMAL(18,2)"), on=["MoneyDeposited"]),
    },
    category="account",
    version=2,  # 2: the balance counts the closing payout, as the domain's fold does
)

order_status = Projection(
    "order_status",
    {
        "customer": First(data("customer"), on=["OrderPlaced"]),
        "status": Last(_status(_ORDER_STATUS), on=list(_ORDER_STATUS)),
        "total": Last(data("total", "DECIMAL(18,2)"), on=["OrderPlaced"]),
        "paid": Sum(data("amount", "DECIMAL(18,2)"), on={"OrderPaid": 1}),
        "refunded": Sum(data("amount", "DECIMAL(18,2)"), on={"OrderRefunded": 1}),
    },
    category="order",
)

PROJECTIONS = {p.name: p for p in (account_balances, order_status)}

#: What audit reports check by default: the rules the example domains declare.
SEGREGATION_RULES: tuple[SegregationRule, ...] = (
    *accounts.decider.segregation,
    *orders.decider.segregation,
)


def projection(name: str) -> Projection:
    try:
        return PROJECTIONS[name]
    except KeyError:
        raise ValidationError(
            f"There is no projection named {name!r}.",
            hint=f"choose one of {', '.join(sorted(PROJECTIONS))}.",
        ) from None
