"""Deterministic sample data: bank accounts and orders, from a thousand to 100 million events.

Everything is drawn from one seeded numpy generator and built column by column, so the same
seed gives the same events, byte for byte, at more than a million events a second. Above
:data:`SHARD_EVENTS` (10M) a sample is drawn in shards, each its own streams from a seed of
its own, and merged in recorded order (:func:`sample_tables`): 100M events in a few GB.

What is in it:

* **accounts** (``account-<n>``): ``AccountOpened``, ``MoneyDeposited``, ``MoneyWithdrawn``,
  ``OverdraftLimitChanged``, ``AccountFrozen``/``AccountUnfrozen``, ``AccountClosed``. The
  rules hold: no withdrawal takes the balance below the overdraft limit in force, no limit is
  set below the current overdraft, nothing moves while an account is frozen, a closed account
  is paid out and sees nothing after.
* **orders** (``order-<n>``): ``OrderPlaced``, ``OrderPaid``, ``OrderShipped``,
  ``OrderDelivered``, ``OrderCancelled``, ``OrderRefunded``, following the order state
  machine (nothing ships before it is paid, no refund above what was paid). Each order keeps
  one correlation id, and each event's causation id is the event before it.
* **audit texture**: every event names an ``actor`` (customers, staff, ``system``), staff
  actions carry ``approved_by`` and a ``reason``; about 1% of events are back-dated
  corrections (valid time days before system time); about 6% happen after hours; in a few
  staff actions the actor approves their own change; the domains' segregation rules are
  breached now and then (an account unfrozen by whoever froze it, by chance; half the
  refunds of cancelled orders made by whoever cancelled them).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from esanalytics.domain import BatchCommand, CommandContext, Decider, accounts, orders
from esanalytics.events import TIMESTAMP, uuid4_array
from esanalytics.exceptions import ValidationError

__all__ = [
    "ACCOUNT_EVENTS",
    "DECIDERS",
    "ORDER_EVENTS",
    "SHARD_EVENTS",
    "SampleSpec",
    "commands",
    "generate",
    "generate_chunks",
    "sample_tables",
]

ACCOUNT_EVENTS = (
    "AccountOpened",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "OverdraftLimitChanged",
    "AccountFrozen",
    "AccountUnfrozen",
    "AccountClosed",
)
ORDER_EVENTS = (
    "OrderPlaced",
    "OrderPaid",
    "OrderShipped",
    "OrderDelivered",
    "OrderCancelled",
    "OrderRefunded",
)
(OPENED, DEPOSITED, WITHDRAWN, LIMIT, FROZEN, UNFROZEN, CLOSED) = range(7)
(PLACED, PAID, SHIPPED, DELIVERED, CANCELLED, REFUNDED) = range(10, 16)

_COMMANDS = (
    "OpenAccount", "DepositMoney", "WithdrawMoney", "ChangeOverdraftLimit", "FreezeAccount",
    "UnfreezeAccount", "CloseAccount", "", "", "",
    "PlaceOrder", "PayOrder", "ShipOrder", "DeliverOrder", "CancelOrder", "RefundOrder",
)  # fmt: skip
STAFF = (
    "alice", "bob", "chen", "dana", "emeka", "farah", "gus", "hana", "ivan", "jo",
    "kofi", "lena", "mateo", "nora", "omar", "priya",
)  # fmt: skip
_REASONS = {
    LIMIT: ("customer request", "credit review", "risk reassessment"),
    FROZEN: ("suspected fraud", "court order", "customer request"),
    UNFROZEN: ("review cleared", "court order lifted", "customer request"),
    CLOSED: ("customer request", "inactivity", "customer moved abroad"),
    CANCELLED: ("customer request", "out of stock", "payment failed"),
    REFUNDED: ("goods returned", "damaged in transit", "goodwill"),
}
_REASON_TEXTS = (
    "",
    *(f',"reason":"{text}"' for options in _REASONS.values() for text in options),
    ',"reason":"correction: booked late"',
)
DAY_US = 86_400_000_000
HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class SampleSpec:
    """How much and when: ``events`` in total over ``days`` days from ``start``; about
    ``streams`` streams (default: one per 100 events), 70% accounts and 30% orders."""

    events: int = 1_000_000
    seed: int = 42
    streams: int | None = None
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC)
    days: int = 730

    def __post_init__(self) -> None:
        if not 1_000 <= self.events <= 100_000_000:
            raise ValidationError(
                f"A sample of {self.events} events is out of range.",
                hint="ask for 1,000 to 100,000,000 events.",
            )
        end = self.start.timestamp() + self.days * 86_400
        if end > datetime.now(UTC).timestamp():
            raise ValidationError(
                "The sample would end in the future.",
                hint="pick an earlier start or fewer days: recorded times are never in the future.",
            )


def _text(values: Any) -> pa.Array:
    return pc.cast(pa.array(values), pa.string())


def _money(cents: np.ndarray[Any, Any]) -> pa.Array:
    """Cents as JSON numbers with two decimals: 12345 -> '123.45'."""
    whole = _text(cents // 100)
    frac = pc.utf8_lpad(_text(cents % 100), 2, "0")
    return pc.binary_join_element_wise(whole, frac, ".")


def _join(*parts: Any) -> pa.Array:
    arrays = [p if isinstance(p, pa.Array | pa.ChunkedArray) else pa.scalar(p) for p in parts]
    return pc.binary_join_element_wise(*arrays, "")


def _pick(values: tuple[str, ...], index: np.ndarray[Any, Any]) -> pa.Array:
    return pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), pa.array(values)).cast(
        pa.string()
    )


def _runs(lengths: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """For streams of these lengths: each event's stream index and its index in the stream."""
    stream = np.repeat(np.arange(len(lengths)), lengths)
    starts = np.cumsum(lengths) - lengths
    return stream, np.arange(lengths.sum()) - starts[stream]


def _grouped_cumsum(
    values: np.ndarray[Any, Any], stream: np.ndarray[Any, Any], lengths: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    total = np.cumsum(values)
    starts = np.cumsum(lengths) - lengths
    before: np.ndarray[Any, Any] = np.r_[0, total][starts]
    result: np.ndarray[Any, Any] = total - before[stream]
    return result


def _time_of_day(
    rng: np.random.Generator, n: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Microseconds into the day: mostly office hours, about 6% at night."""
    night = rng.random(n) < 0.06
    office = np.clip(rng.normal(13.0, 2.4, n), 8.0, 18.0)
    late = (rng.uniform(19.0, 30.0, n)) % 24.0
    hours = np.where(night, late, office)
    return (hours * HOUR_US).astype(np.int64), night


def _accounts(
    rng: np.random.Generator, count: int, events: int, spec: SampleSpec
) -> dict[str, Any]:
    mean = max(events / count, 2.0)
    lengths = np.maximum(2, rng.poisson(mean - 2, count) + 2).astype(np.int64)
    lengths = np.minimum(lengths, spec.days // 2)
    stream, k = _runs(lengths)
    n = len(stream)
    last = k == lengths[stream] - 1
    closes = rng.random(count) < 0.08
    # Event types.
    kind = rng.choice(
        np.array([DEPOSITED, WITHDRAWN, LIMIT, FROZEN]), size=n, p=[0.52, 0.40, 0.06, 0.02]
    )
    kind[(kind == FROZEN) & ((k % 2 == 0) | (k > lengths[stream] - 3))] = DEPOSITED
    kind[1:][kind[:-1] == FROZEN] = UNFROZEN
    kind[k == 0] = OPENED
    kind[last & closes[stream]] = CLOSED
    # Amounts (cents) and limits; withdrawals that would break the limit become deposits.
    amount = np.round(rng.lognormal(10.0, 1.0, n)).astype(np.int64) + 100
    initial_limit = rng.choice(np.array([0, 50_000, 100_000]), count)
    new_limit = rng.choice(np.array([0, 50_000, 100_000, 200_000, 500_000]), n)
    limit_value = np.where(k == 0, initial_limit[stream], np.where(kind == LIMIT, new_limit, -1))
    order_in = np.where(limit_value >= 0, np.arange(n), 0)
    np.maximum.accumulate(order_in, out=order_in)
    limit_in_force = limit_value[order_in]
    signed = np.where(kind == DEPOSITED, amount, np.where(kind == WITHDRAWN, -amount, 0))
    balance = _grouped_cumsum(signed, stream, lengths)
    flip = (kind == WITHDRAWN) & (balance < -limit_in_force)
    kind[flip] = DEPOSITED
    signed = np.where(kind == DEPOSITED, amount, np.where(kind == WITHDRAWN, -amount, 0))
    balance = _grouped_cumsum(signed, stream, lengths)
    raise_to = np.where((kind == LIMIT) & (balance < -new_limit), -balance, new_limit)
    new_limit = ((raise_to + 9_999) // 10_000) * 10_000
    # A "change" to the limit already in force decides nothing: make it a deposit instead.
    limit_value = np.where(k == 0, initial_limit[stream], np.where(kind == LIMIT, new_limit, -1))
    set_at = np.where(limit_value >= 0, np.arange(n), 0)
    np.maximum.accumulate(set_at, out=set_at)
    before = limit_value[np.r_[0, set_at[:-1]]]
    kind[(kind == LIMIT) & (k > 0) & (new_limit == before)] = DEPOSITED
    signed = np.where(kind == DEPOSITED, amount, np.where(kind == WITHDRAWN, -amount, 0))
    balance = _grouped_cumsum(signed, stream, lengths)
    overdrawn_close = (kind == CLOSED) & (balance < 0)
    kind[overdrawn_close] = DEPOSITED
    amount[overdrawn_close] = -balance[overdrawn_close]
    signed = np.where(kind == DEPOSITED, amount, np.where(kind == WITHDRAWN, -amount, 0))
    balance = _grouped_cumsum(signed, stream, lengths)
    # Times: a start day per account, at least a day between its events.
    span = spec.days - lengths - 1
    first_day = (rng.random(count) * np.maximum(span, 1) * 0.6).astype(np.int64)
    gap = 1 + rng.poisson(np.maximum(span - first_day, 0)[stream] / lengths[stream] / 1.5)
    gap[k == 0] = 0
    day = first_day[stream] + _grouped_cumsum(gap, stream, lengths)
    day = np.minimum(day, spec.days - 1)
    tod, night = _time_of_day(rng, n)
    return {
        "n": n,
        "stream": stream,
        "k": k,
        "kind": kind,
        "amount": amount,
        "limit": np.where(k == 0, initial_limit[stream], new_limit),
        "balance": balance,
        "day": day,
        "tod": tod,
        "night": night,
        "owner": stream,
    }


def _orders(rng: np.random.Generator, count: int, spec: SampleSpec) -> dict[str, Any]:
    paths = (
        (PLACED, PAID, SHIPPED, DELIVERED),
        (PLACED, PAID, SHIPPED, DELIVERED, REFUNDED),
        (PLACED, CANCELLED),
        (PLACED, PAID, CANCELLED, REFUNDED),
        (PLACED, PAID, SHIPPED),
        (PLACED,),
    )
    choice = rng.choice(len(paths), count, p=[0.70, 0.08, 0.10, 0.04, 0.05, 0.03])
    lengths = np.array([len(p) for p in paths])[choice]
    stream, k = _runs(lengths)
    table = np.full((len(paths), 5), -1)
    for i, p in enumerate(paths):
        table[i, : len(p)] = p
    kind = table[choice[stream], k]
    total = np.round(rng.lognormal(8.5, 0.9, count)).astype(np.int64) + 500
    partial = rng.random(count) < 0.5
    refund = np.where(
        (choice == 1) & partial, (total * rng.uniform(0.1, 0.9, count)).astype(np.int64), total
    )
    amount = np.where(kind == REFUNDED, refund[stream], total[stream])
    first_day = (rng.random(count) * (spec.days - 10)).astype(np.int64)
    step_days = np.where(k == 0, 0, np.where(kind == PAID, 0, rng.integers(1, 4, len(k))))
    day = first_day[stream] + _grouped_cumsum(step_days, stream, lengths)
    tod, night = _time_of_day(rng, len(k))
    tod = tod + np.where(kind == PAID, 60_000_000, 0) * k  # paid minutes after placing
    tod = np.minimum(tod, DAY_US - 1)
    prev_tod = np.r_[-1, tod[:-1]]
    same_day = np.r_[False, (day[1:] == day[:-1]) & (stream[1:] == stream[:-1])]
    tod = np.where(same_day & (tod <= prev_tod), np.minimum(prev_tod + 1_000_000, DAY_US - 1), tod)
    return {
        "n": len(k),
        "stream": stream,
        "k": k,
        "kind": kind,
        "amount": amount,
        "items": rng.integers(1, 9, count)[stream],
        "day": day,
        "tod": tod,
        "night": night,
        "customer": rng.integers(1, max(count // 3, 2), count)[stream],
    }


class _Sample:
    """The generated skeleton of every event, in global (recorded time) order."""

    def __init__(self, spec: SampleSpec) -> None:
        rng = np.random.default_rng(spec.seed)
        streams = spec.streams or max(spec.events // 100, 10)
        n_orders = max(int(streams * 0.3), 1)
        n_accounts = max(streams - n_orders, 1)
        order_events = int(n_orders * 3.6)
        wanted = int((spec.events - order_events) * 1.03)
        acc = _accounts(rng, n_accounts, max(wanted, 2 * n_accounts), spec)
        ords = _orders(rng, n_orders, spec)
        start_us = int(spec.start.timestamp() * 1_000_000)
        self.spec = spec
        self.n_accounts = n_accounts
        self.n_orders = n_orders
        is_order = np.r_[np.zeros(acc["n"], bool), np.ones(ords["n"], bool)]
        recorded = (
            start_us + np.r_[acc["day"], ords["day"]] * DAY_US + np.r_[acc["tod"], ords["tod"]]
        )
        # Keep exactly spec.events events: the earliest ones, in recorded order.
        order = np.argsort(recorded, kind="stable")[: spec.events]
        self.order = order
        self.n = len(order)
        self.is_order = is_order
        self.recorded = recorded
        self.acc = acc
        self.ords = ords
        self.night = np.r_[acc["night"], ords["night"]]
        n_all = len(recorded)
        self.kind = np.r_[acc["kind"], ords["kind"]]
        self.amount = np.r_[acc["amount"], ords["amount"]]
        self.stream = np.r_[acc["stream"], ords["stream"] + n_accounts]
        self.k = np.r_[acc["k"], ords["k"]]
        # Ids: event ids for all; causation chains inside each order.
        # (kept as their 16 random bytes, 16 bytes an event rather than 40 as text: the
        # text is made for each chunk)
        self.event_id = _raw_ids(rng.bytes(16 * n_all))
        self.command_id = _raw_ids(rng.bytes(16 * n_all))
        self.correlation = _raw_ids(rng.bytes(16 * (n_accounts + n_orders)))
        self.staff = rng.integers(0, len(STAFF), n_all)
        approver = (self.staff + rng.integers(1, len(STAFF), n_all)) % len(STAFF)
        self_approved = rng.random(n_all) < 0.004
        self.approver = np.where(self_approved, self.staff, approver)
        backdate = (rng.random(n_all) < 0.01) & (self.k > 0)
        self.backdate_us = np.where(backdate, rng.integers(1, 45, n_all) * DAY_US, 0)
        self.limit = np.r_[acc["limit"], np.zeros(ords["n"], np.int64)]
        self.items = np.r_[np.zeros(acc["n"], np.int64), ords["items"]]
        self.customer = np.r_[acc["stream"], ords["customer"]]
        self.reason_pick = rng.integers(0, 3, n_all)
        # Half the refunds of cancelled orders are made by whoever cancelled the order: a
        # breach of the orders domain's segregation rule. Drawn last, so that every other
        # value is what it was before this was added.
        refund_after_cancel = np.r_[
            False,
            (self.kind[1:] == REFUNDED)
            & (self.kind[:-1] == CANCELLED)
            & (self.stream[1:] == self.stream[:-1]),
        ]
        same = refund_after_cancel & (rng.random(n_all) < 0.5)
        offset = (self.approver - self.staff) % len(STAFF)  # 0 where self-approved
        self.staff = np.where(same, np.r_[0, self.staff[:-1]], self.staff)
        self.approver = (self.staff + offset) % len(STAFF)

    def chunk(self, start: int, stop: int) -> pa.Table:
        return _render(self.skeleton(self.order[start:stop]))

    def skeleton(self, idx: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """Everything :func:`_render` needs of the events ``idx`` (indexes into the sample's
        arrays), as numbers and id bytes: what a large sample spills to disk between drawing
        a shard and writing its events."""
        stream = self.stream[idx]
        is_order = self.is_order[idx]
        return {
            "kind": self.kind[idx],
            "is_order": is_order,
            "number": np.where(is_order, stream - self.n_accounts, stream),
            "k": self.k[idx],
            "recorded": self.recorded[idx],
            "backdate_us": self.backdate_us[idx],
            "customer": self.customer[idx],
            "staff": self.staff[idx],
            "approver": self.approver[idx],
            "reason_pick": self.reason_pick[idx],
            "amount": self.amount[idx],
            "limit": self.limit[idx],
            "items": self.items[idx],
            "balance": self._balance(idx),
            "event_id": self.event_id[idx],
            "previous": self.event_id[np.maximum(idx - 1, 0)],
            "command_id": self.command_id[idx],
            "correlation": self.correlation[stream],
        }

    def _balance(self, idx: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        n_acc = self.acc["n"]
        safe = np.minimum(idx, n_acc - 1)
        return np.where(idx < n_acc, self.acc["balance"][safe], 0)


def _raw_ids(random_bytes: bytes) -> np.ndarray[Any, Any]:
    """Random bytes as one row of 16 per id (made into UUID4 text by :func:`_ids`)."""
    return np.frombuffer(random_bytes, dtype=np.uint8).reshape(-1, 16)


def _ids(raw: np.ndarray[Any, Any]) -> pa.Array:
    return uuid4_array(np.ascontiguousarray(raw).tobytes())


def _render(s: dict[str, np.ndarray[Any, Any]]) -> pa.Table:
    """The ingest table of the events of a skeleton (from :meth:`_Sample.skeleton`), in its
    row order."""
    kind = s["kind"]
    m = len(kind)
    is_order = s["is_order"]
    stream_id = _join(_pick(("account-", "order-"), is_order.astype(np.int32)), _text(s["number"]))
    names = (*ACCOUNT_EVENTS, "", "", "", *ORDER_EVENTS)
    event_type = _pick(names, kind)
    data = _data(s)
    customer = _text(s["customer"])
    # Who and why.
    staff_kind = np.isin(kind, (OPENED, LIMIT, FROZEN, UNFROZEN, CLOSED, CANCELLED, REFUNDED))
    system_kind = np.isin(kind, (PAID, SHIPPED, DELIVERED))
    staff = _pick(STAFF, s["staff"])
    who = pc.if_else(
        pa.array(staff_kind), staff,
        pc.if_else(pa.array(system_kind), pa.scalar("system"), _join("customer-", customer)),
    )  # fmt: skip
    approver = np.where(staff_kind, s["approver"] + 1, 0)
    approved = _pick(("", *(f',"approved_by":"{name}"' for name in STAFF)), approver)
    # One code per row into a table of every reason text (0: none), so no string is
    # built per row.
    reason_code = np.zeros(m, dtype=np.int64)
    for slot, code in enumerate(_REASONS):
        reason_code[kind == code] = 1 + 3 * slot + s["reason_pick"][kind == code]
    reason_code[s["backdate_us"] > 0] = 1 + 3 * len(_REASONS)
    reason_part = _pick(_REASON_TEXTS, reason_code)
    event_id = _ids(s["event_id"])
    previous = _ids(s["previous"])
    command = _ids(s["command_id"])
    causation = pc.if_else(pa.array(is_order & (s["k"] > 0)), previous, command)
    correlation = pc.if_else(pa.array(is_order), _ids(s["correlation"]), command)
    source = _pick(
        ("online", "branch", "batch"), np.where(staff_kind, 1, np.where(system_kind, 2, 0))
    )
    metadata = _join(
        '{"actor":"', who, '"', approved, ',"causation_id":"', causation,
        '","command":"', _pick(_COMMANDS, kind), '","command_id":"', command, '","correlation_id":"', correlation, '"',
        reason_part, ',"source":"', source, '"}',
    )  # fmt: skip
    recorded = s["recorded"]
    return pa.table(
        {
            "stream_id": stream_id,
            "event_id": event_id,
            "event_type": event_type,
            "occurred_at": pa.array(recorded - s["backdate_us"]).view(TIMESTAMP),
            "recorded_at": pa.array(recorded).view(TIMESTAMP),
            "data": data,
            "metadata": metadata,
        }
    )


def _data(s: dict[str, np.ndarray[Any, Any]]) -> pa.Array:
    """The data JSON of each event: each template is filled only for its own rows, then
    the pieces are put back in row order with one take."""
    kind = s["kind"]
    order = np.argsort(kind, kind="stable")
    ordered = kind[order]
    cuts = np.r_[0, np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, len(order)]
    pieces = []
    for lo, hi in itertools.pairwise(cuts):
        rows = order[lo:hi]
        pieces.append(_template(int(ordered[lo]), s, rows).cast(pa.string()))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return pa.concat_arrays(pieces).take(pa.array(inverse))


def _template(
    code: int, s: dict[str, np.ndarray[Any, Any]], rows: np.ndarray[Any, Any]
) -> pa.Array:
    n = len(rows)
    if code in (FROZEN, UNFROZEN, DELIVERED, CANCELLED):
        text = {
            FROZEN: '{"until":null}',
            UNFROZEN: "{}",
            DELIVERED: "{}",
            CANCELLED: '{"by":"customer"}',
        }
        return pa.array([text[code]] * n, pa.string())
    amount = _money(s["amount"][rows])
    if code in (DEPOSITED, WITHDRAWN, REFUNDED):
        return _join('{"amount":', amount, ',"currency":"EUR"}')
    if code == PAID:
        return _join('{"amount":', amount, ',"currency":"EUR","method":"card"}')
    if code == LIMIT:
        return _join('{"currency":"EUR","overdraft_limit":', _money(s["limit"][rows]), "}")
    customer = _text(s["customer"][rows])
    if code == OPENED:
        limit = _money(s["limit"][rows])
        return _join(
            '{"currency":"EUR","overdraft_limit":', limit, ',"owner":"customer-', customer, '"}'
        )
    if code == CLOSED:
        return _join('{"currency":"EUR","payout":', _money(np.maximum(s["balance"][rows], 0)), "}")
    if code == PLACED:
        items = _text(s["items"][rows])
        return _join(
            '{"currency":"EUR","customer":"customer-',
            customer,
            '","items":',
            items,
            ',"total":',
            amount,
            "}",
        )
    if code == SHIPPED:
        tracking = pc.utf8_slice_codeunits(_ids(s["command_id"][rows]), 0, 8)
        return _join('{"carrier":"DHL","tracking":"', tracking, '"}')
    raise AssertionError(f"no template for event kind {code}")


_TO_COMMAND: dict[str, Callable[[dict[str, Any]], Any]] = {
    "AccountOpened": lambda d: accounts.OpenAccount(
        d["owner"], d["overdraft_limit"], d["currency"]
    ),
    "MoneyDeposited": lambda d: accounts.DepositMoney(d["amount"], d.get("channel", "unknown")),
    "MoneyWithdrawn": lambda d: accounts.WithdrawMoney(d["amount"], d.get("channel", "unknown")),
    "OverdraftLimitChanged": lambda d: accounts.ChangeOverdraftLimit(d["overdraft_limit"]),
    "AccountFrozen": lambda d: accounts.FreezeAccount(d["until"]),
    "AccountUnfrozen": lambda d: accounts.UnfreezeAccount(),
    "AccountClosed": lambda d: accounts.CloseAccount(),
    "OrderPlaced": lambda d: orders.PlaceOrder(
        d["customer"], d["items"], d["total"], d["currency"]
    ),
    "OrderPaid": lambda d: orders.PayOrder(d["amount"], d["method"]),
    "OrderShipped": lambda d: orders.ShipOrder(d["carrier"], d["tracking"]),
    "OrderDelivered": lambda d: orders.DeliverOrder(),
    "OrderCancelled": lambda d: orders.CancelOrder(d["by"]),
    "OrderRefunded": lambda d: orders.RefundOrder(d["amount"]),
}
_CONTEXT_KEYS = {"actor", "reason", "correlation_id", "causation_id", "source"}
#: The deciders that write the sample, by stream category.
DECIDERS: dict[str, Decider[Any]] = {"account": accounts.decider, "order": orders.decider}


def commands(plan: pa.Table) -> Iterator[BatchCommand]:
    """The commands behind a chunk of the sample (from :func:`generate_chunks`): who sent
    what to which stream, when, and with which ids. :func:`esanalytics.domain.handle_batch`
    with :data:`DECIDERS` decides them into the sample's events; the vectorized chunk is the
    fast path that writes the same events without deciding (a test holds the two equal)."""
    columns = {
        name: plan[name].to_pylist()
        for name in ("stream_id", "event_id", "event_type", "occurred_at", "recorded_at")
    }
    data = plan["data"].to_pylist()
    metadata = plan["metadata"].to_pylist()
    for i, stream_id in enumerate(columns["stream_id"]):
        meta = json.loads(metadata[i])
        context = CommandContext(
            **{key: meta.pop(key) for key in _CONTEXT_KEYS if key in meta},
            extra={k: v for k, v in meta.items() if k not in ("command", "command_id")},
        )
        yield BatchCommand(
            stream_id,
            _TO_COMMAND[columns["event_type"][i]](json.loads(data[i])),
            context,
            occurred_at=columns["occurred_at"][i],
            recorded_at=columns["recorded_at"][i],
            command_id=meta["command_id"],
            event_ids=(columns["event_id"][i],),
        )


def generate_chunks(
    spec: SampleSpec, *, chunk_rows: int = 1_000_000
) -> tuple[int, Callable[[int, int], pa.Table]]:
    """``(total, chunk)``: the number of events and a function that builds the ingest table of
    events ``[start, stop)`` in recorded order, so the events never sit in memory whole (their
    skeleton does: about 250 bytes an event; :func:`sample_tables` bounds that too)."""
    sample = _Sample(spec)
    return sample.n, sample.chunk


def sample_tables(
    spec: SampleSpec, *, chunk_rows: int = 1_000_000, spill: str | Path | None = None
) -> tuple[int, Iterator[pa.Table]]:
    """``(total, tables)``: the number of events and their ingest tables in recorded order,
    ``chunk_rows`` at a time, in memory bounded by :data:`SHARD_EVENTS` whatever the size.

    Up to :data:`SHARD_EVENTS` events this is :func:`generate_chunks`' sample, event for
    event. A larger sample is drawn as shards of at most that many events, each with streams
    of its own (numbered after the previous shard's) from a seed of its own, over the whole
    time span; each shard's skeleton is spilled, a week of recorded time to a file, into a
    temporary folder (in ``spill``, default the system's), about 140 bytes an event; the
    weeks are then read back one by one, their shards' events merged in recorded order."""
    if spec.events <= SHARD_EVENTS:
        sample = _Sample(spec)
        stops = range(0, sample.n, chunk_rows)
        return sample.n, (sample.chunk(lo, min(lo + chunk_rows, sample.n)) for lo in stops)
    return spec.events, _sharded(spec, chunk_rows, spill)


#: The most events a sample draws at once: a larger one is made of shards (see
#: :func:`sample_tables`), which keeps a 100M-event sample within a few GB of memory.
SHARD_EVENTS = 10_000_000
_WEEK_US = 7 * DAY_US


def _sharded(spec: SampleSpec, chunk_rows: int, spill: str | Path | None) -> Iterator[pa.Table]:
    import pyarrow.feather as feather

    count = -(-spec.events // SHARD_EVENTS)
    sizes = [spec.events // count + int(i < spec.events % count) for i in range(count)]
    start_us = int(spec.start.timestamp() * 1_000_000)
    with tempfile.TemporaryDirectory(prefix="esa-sample-", dir=spill) as folder:
        weeks: dict[int, list[Path]] = {}
        accounts = orders = 0
        for index, size in enumerate(sizes):
            seed = int(np.random.SeedSequence([spec.seed, index]).generate_state(1)[0])
            streams = None if spec.streams is None else max(spec.streams * size // spec.events, 10)
            shard = _Sample(dataclasses.replace(spec, events=size, seed=seed, streams=streams))
            if shard.n != size:
                raise AssertionError(f"shard {index} drew {shard.n} events, not {size}")
            recorded = shard.recorded[shard.order]
            week = (recorded - start_us) // _WEEK_US
            cuts = np.r_[0, np.flatnonzero(week[1:] != week[:-1]) + 1, len(week)]
            for lo, hi in itertools.pairwise(cuts):
                skeleton = shard.skeleton(shard.order[lo:hi])
                order = skeleton["is_order"]
                skeleton["number"] = skeleton["number"] + np.where(order, orders, accounts)
                skeleton["customer"] = skeleton["customer"] + accounts
                path = Path(folder) / f"{int(week[lo]):05d}-{index:04d}.arrow"
                feather.write_feather(_spilled(skeleton), path, compression="lz4")
                weeks.setdefault(int(week[lo]), []).append(path)
            accounts += shard.n_accounts
            orders += shard.n_orders
            del shard, recorded, week
        for _week, paths in sorted(weeks.items()):
            merged = pa.concat_tables(feather.read_table(path) for path in paths)
            for path in paths:
                path.unlink()
            by_time = np.argsort(merged["recorded"].to_numpy(), kind="stable")
            merged = merged.take(pa.array(by_time))
            for lo in range(0, merged.num_rows, chunk_rows):
                yield _render(_unspilled(merged.slice(lo, chunk_rows)))


def _spilled(skeleton: dict[str, np.ndarray[Any, Any]]) -> pa.Table:
    """A skeleton as an Arrow table (ids as 16-byte binaries)."""
    columns: dict[str, pa.Array] = {}
    for name, values in skeleton.items():
        if values.ndim == 2:
            raw = pa.py_buffer(np.ascontiguousarray(values).tobytes())
            columns[name] = pa.Array.from_buffers(pa.binary(16), len(values), [None, raw])
        else:
            columns[name] = pa.array(values)
    return pa.table(columns)


def _unspilled(table: pa.Table) -> dict[str, np.ndarray[Any, Any]]:
    """The skeleton a :func:`_spilled` table holds."""
    skeleton = {}
    for name in table.column_names:
        column = table[name].combine_chunks()
        if pa.types.is_fixed_size_binary(column.type):
            raw = np.frombuffer(column.buffers()[1], dtype=np.uint8)
            start = column.offset * 16
            skeleton[name] = raw[start : start + 16 * len(column)].reshape(-1, 16)
        else:
            skeleton[name] = column.to_numpy(zero_copy_only=False)
    return skeleton


def generate(spec: SampleSpec | None = None, **options: Any) -> pa.Table:
    """The whole sample as one ingest table (for small samples; see :func:`generate_chunks`).

    >>> generate(events=2_000, seed=7).num_rows
    2000
    """
    spec = spec or SampleSpec(**options)
    total, chunk = generate_chunks(spec)
    return chunk(0, total)
