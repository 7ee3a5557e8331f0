"""Orders: an example domain with a state machine, used by the sample data and the tests.

placed -> paid -> shipped -> delivered; placed or paid -> cancelled; a paid order (shipped,
delivered or cancelled) may be refunded, never above what was paid. Nothing ships before it
is paid.

>>> state = decider.fold([OrderPlaced(customer="customer-1", items=2, total=30.0)])
>>> decider.decide(ShipOrder(carrier="DHL", tracking="x1"), state)
Traceback (most recent call last):
...
esanalytics.domain.decider.CommandRejected: Order is placed; it can only ship once paid.
Hint: pay it first (PayOrder).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from esanalytics.domain.decider import CommandRejected, Decider, EventCodec
from esanalytics.domain.duties import SegregationRule

__all__ = [
    "CancelOrder", "DeliverOrder", "OrderCancelled", "OrderDelivered", "OrderPaid", "OrderPlaced",
    "OrderRefunded", "OrderShipped", "OrderState", "PayOrder", "PlaceOrder", "RefundOrder",
    "ShipOrder", "decider",
]  # fmt: skip


@dataclass(frozen=True)
class PlaceOrder:
    customer: str
    items: int
    total: float
    currency: str = "EUR"


@dataclass(frozen=True)
class PayOrder:
    amount: float
    method: str = "card"


@dataclass(frozen=True)
class ShipOrder:
    carrier: str
    tracking: str


@dataclass(frozen=True)
class DeliverOrder:
    pass


@dataclass(frozen=True)
class CancelOrder:
    by: str = "customer"


@dataclass(frozen=True)
class RefundOrder:
    amount: float


@dataclass(frozen=True)
class OrderPlaced:
    customer: str
    items: int
    total: float
    currency: str = "EUR"


@dataclass(frozen=True)
class OrderPaid:
    amount: float
    currency: str = "EUR"
    method: str = "card"


@dataclass(frozen=True)
class OrderShipped:
    carrier: str
    tracking: str


@dataclass(frozen=True)
class OrderDelivered:
    pass


@dataclass(frozen=True)
class OrderCancelled:
    by: str = "customer"


@dataclass(frozen=True)
class OrderRefunded:
    amount: float
    currency: str = "EUR"


@dataclass(frozen=True)
class OrderState:
    status: str = "none"  # none, placed, paid, shipped, delivered, cancelled
    customer: str | None = None
    total: float = 0.0
    paid: float = 0.0
    refunded: float = 0.0
    currency: str = "EUR"


def evolve(state: OrderState, event: Any) -> OrderState:
    match event:
        case OrderPlaced(customer=customer, total=total, currency=currency):
            return OrderState("placed", customer, total, 0.0, 0.0, currency)
        case OrderPaid(amount=amount):
            return replace(state, status="paid", paid=round(state.paid + amount, 2))
        case OrderShipped():
            return replace(state, status="shipped")
        case OrderDelivered():
            return replace(state, status="delivered")
        case OrderCancelled():
            return replace(state, status="cancelled")
        case OrderRefunded(amount=amount):
            return replace(state, refunded=round(state.refunded + amount, 2))
    raise TypeError(f"not an order event: {event!r}")


def _reject(problem: str, rule: str, hint: str) -> CommandRejected:
    return CommandRejected(problem, rule=rule, hint=hint)


def decide(command: Any, state: OrderState) -> list[Any]:
    status = state.status
    match command:
        case PlaceOrder(customer=customer, items=items, total=total, currency=currency):
            if status != "none":
                raise _reject("The order is already placed.", "place-once", "use another order id.")
            if items < 1 or total <= 0:
                raise _reject(
                    "An order needs at least one item and a positive total.",
                    "non-empty",
                    "check items and total.",
                )
            return [OrderPlaced(customer, items, float(total), currency)]
        case _ if status == "none":
            raise _reject("The order does not exist.", "exists", "place it first (PlaceOrder).")
        case PayOrder(amount=amount, method=method):
            if status != "placed":
                raise _reject(
                    f"Order is {status}; only a placed order can be paid.",
                    "pay-placed",
                    "an order is paid once, before shipping.",
                )
            if abs(amount - state.total) > 0.005:
                raise _reject(
                    f"The payment {amount:.2f} does not match the total {state.total:.2f}.",
                    "pay-total",
                    f"pay exactly {state.total:.2f}.",
                )
            return [OrderPaid(float(amount), state.currency, method)]
        case ShipOrder(carrier=carrier, tracking=tracking):
            if status != "paid":
                raise _reject(
                    f"Order is {status}; it can only ship once paid.",
                    "ship-after-payment",
                    "pay it first (PayOrder)." if status == "placed" else "it has left that stage.",
                )
            return [OrderShipped(carrier, tracking)]
        case DeliverOrder():
            if status != "shipped":
                raise _reject(
                    f"Order is {status}; only a shipped order can be delivered.",
                    "deliver-shipped",
                    "ship it first (ShipOrder).",
                )
            return [OrderDelivered()]
        case CancelOrder(by=by):
            if status not in ("placed", "paid"):
                raise _reject(
                    f"Order is {status}; only placed or paid orders can be cancelled.",
                    "cancel-before-shipping",
                    "refund a delivered order instead.",
                )
            return [OrderCancelled(by)]
        case RefundOrder(amount=amount):
            if state.paid <= 0:
                raise _reject(
                    "Nothing was paid, so nothing can be refunded.",
                    "refund-paid",
                    "cancel an unpaid order instead.",
                )
            if status not in ("paid", "shipped", "delivered", "cancelled"):
                raise _reject(
                    f"Order is {status}; it cannot be refunded.", "refund-state", "check the order."
                )
            left = round(state.paid - state.refunded, 2)
            if amount <= 0 or amount > left + 1e-9:
                raise _reject(
                    f"A refund of {amount:.2f} is above what is left to refund ({left:.2f}).",
                    "refund-at-most-paid",
                    f"refund at most {left:.2f}.",
                )
            return [OrderRefunded(float(amount), state.currency)]
    raise TypeError(f"not an order command: {command!r}")  # fmt: skip


codec = EventCodec(
    [OrderPlaced, OrderPaid, OrderShipped, OrderDelivered, OrderCancelled, OrderRefunded]
)

decider: Decider[OrderState] = Decider(
    name="order", version=1, initial=OrderState(), evolve=evolve, decide=decide, codec=codec,
    category="order",
    # Whoever cancelled an order does not also pay the money back.
    segregation=(SegregationRule("OrderCancelled", "OrderRefunded", "cancel-and-refund"),),
)  # fmt: skip
