"""Projections that ship for the example domains (accounts, orders), by name, and the
segregation-of-duties rules those domains declare.

>>> sorted(PROJECTIONS)
['account_balances', 'order_status']
>>> [rule.name for rule in SEGREGATION_RULES]
['freeze-and-unfreeze', 'cancel-and-refund']
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

from esanalytics.domain import SegregationRule, accounts, orders
from esanalytics.exceptions import ValidationError
from esanalytics.projections import (
    Count,
    First,
    FoldProjection,
    Last,
    Max,
    Projection,
    SqlProjection,
    Sum,
    const,
    data,
)

__all__ = ["PROJECTIONS", "SEGREGATION_RULES", "load", "projection"]

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
            hint=f"choose one of {', '.join(sorted(PROJECTIONS))}, or give your own: "
            f"{USER_PROJECTIONS}.",
        ) from None


USER_PROJECTIONS = (
    "a Python file (my_projection.py, or my_projection.py:NAME when it holds several), "
    "a module (package.module:NAME) or a .sql file (a query over events with a key column)"
)


def load(spec: str) -> Projection | SqlProjection | FoldProjection:
    """A projection by name (the shipped ones), or the user's own: a Python file
    (``path.py`` or ``path.py:attr``), a module (``package.module:attr``) or a ``.sql`` file
    whose query over ``events`` returns a ``key`` column (named after the file)."""
    if spec in PROJECTIONS:
        return PROJECTIONS[spec]
    target, _, attr = spec.partition(":") if not Path(spec).exists() else (spec, "", "")
    if target.endswith(".sql"):
        path = Path(target)
        try:
            query = path.read_text().strip().rstrip(";")
        except OSError as error:
            raise ValidationError(
                f"Cannot read the SQL projection {path}: {error.strerror}.",
                hint="check the path of the .sql file.",
            ) from None
        return SqlProjection(re.sub(r"\W", "_", path.stem).lower(), query)
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ValidationError(
                f"There is no Python file {path}.", hint="check the path of the projection file."
            )
        module_name = "esa_user_" + re.sub(r"\W", "_", path.stem)
        spec_ = importlib.util.spec_from_file_location(module_name, path)
        if spec_ is None or spec_.loader is None:
            raise ValidationError(f"Cannot import {path}.", hint="name a .py file.")
        module = importlib.util.module_from_spec(spec_)
        try:
            spec_.loader.exec_module(module)
        except Exception as error:
            raise ValidationError(
                f"Importing {path} failed: {type(error).__name__}: {error}.",
                hint=f"fix the file; `python {path}` shows where it fails.",
            ) from None
    elif attr:
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` would, so local modules import
        try:
            module = importlib.import_module(target)
        except ImportError as error:
            raise ValidationError(
                f"Cannot import the module {target!r}: {error}.",
                hint="check the module path, and run esa from the folder it is importable from.",
            ) from None
    else:
        return projection(spec)
    found = {
        name: value
        for name, value in vars(module).items()
        if isinstance(value, Projection | SqlProjection | FoldProjection)
    }
    if attr:
        if attr not in found:
            raise ValidationError(
                f"{target} has no projection named {attr!r}.",
                hint=f"it has {', '.join(sorted(found)) or 'none'}.",
            )
        return found[attr]
    if len(found) != 1:
        raise ValidationError(
            f"{target} holds {len(found)} projections, so which one is meant is unclear.",
            hint=f"name one as {target}:NAME"
            + (f", one of {', '.join(sorted(found))}." if found else "; define one."),
        )
    return next(iter(found.values()))
