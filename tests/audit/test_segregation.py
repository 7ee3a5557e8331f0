"""Segregation of duties across events: a declared rule (the same actor did step A and step B
of one entity), evaluated in DuckDB, checked against a plain Python computation, declared by
the example domains, breached in the sample and shown in reports."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import esanalytics as esa
from esanalytics.audit import Scope, audit_exceptions, collect
from esanalytics.catalog import SEGREGATION_RULES
from esanalytics.domain import SegregationRule, accounts, orders
from esanalytics.engine import Session
from esanalytics.report import render_html
from esanalytics.sample import SampleSpec, generate

Row = dict[str, Any]
RULE = SegregationRule("OrderPlaced", "OrderApproved")


def rows_of(table: Any) -> list[Row]:
    out = []
    for i, row in enumerate(table.to_pylist()):
        meta = json.loads(row["metadata"])
        out.append(
            {
                "position": row.get("global_position", i + 1),
                "stream": row["stream_id"],
                "type": row["event_type"],
                "actor": meta.get("actor"),
                "correlation": meta.get("correlation_id"),
                "recorded_at": row["recorded_at"],
            }
        )
    return out


def oracle(rows: list[Row], in_scope: set[int], rules: Any) -> set[tuple[int, str, str, int]]:
    """(position of the second step, stream, rule, position of the first first step)."""
    by_stream: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_stream[row["stream"]].append(row)
    found = set()
    for rule in rules:
        for b in rows:
            if b["position"] not in in_scope or b["type"] != rule.second or b["actor"] is None:
                continue
            firsts = [
                a["position"]
                for a in by_stream[b["stream"]]
                if a["type"] == rule.first and a["actor"] == b["actor"] and a is not b
            ]
            if firsts:
                found.add((b["position"], b["stream"], rule.name, min(firsts)))
    return found


def by_sql(session: Session, scope: Scope, rules: Any = None) -> set[tuple[int, str, str, int]]:
    table = audit_exceptions(session, scope, rules=rules).to_pylist()
    return {
        (
            r["global_position"],
            r["stream_id"],
            r["detail"].split(":")[0],
            int(r["detail"].split()[-1]),
        )
        for r in table
        if r["kind"] == "segregation"
    }


def test_a_rule_over_two_event_types_of_one_entity(lake: Path) -> None:
    store = esa.open(lake, create=True)

    def add(stream: str, event_type: str, actor: str | None) -> None:
        meta = {} if actor is None else {"actor": actor}
        store.append(stream, [esa.NewEvent(event_type, {}, metadata=meta)])

    add("order-1", "OrderPlaced", "alice")
    add("order-2", "OrderPlaced", "alice")
    add("order-1", "OrderApproved", "alice")  # breach: alice placed it
    add("order-2", "OrderApproved", "bob")  # fine: four eyes
    add("order-3", "OrderPlaced", None)
    add("order-3", "OrderApproved", None)  # no actor recorded: no one to blame
    add("order-4", "OrderApproved", "carol")
    add("order-4", "OrderApproved", "carol")  # the same step twice is not two steps
    add("order-5", "OrderApproved", "dan")
    add("order-5", "OrderPlaced", "dan")  # the other order still breaches
    add("order-6", "OrderPlaced", "erin")
    add("order-7", "OrderApproved", "erin")  # another entity
    session = Session(store)
    rows = rows_of(store.read_all().to_arrow())
    everything = {r["position"] for r in rows}
    period = Scope("period", start="2000-01-01", end="2100-01-01")
    assert by_sql(session, period, [RULE]) == oracle(rows, everything, [RULE])
    assert by_sql(session, period, [RULE]) == {
        (3, "order-1", "OrderPlaced-then-OrderApproved", 1),
        (9, "order-5", "OrderPlaced-then-OrderApproved", 10),
    }
    assert by_sql(session, Scope("entity", "order-2"), [RULE]) == set()
    assert by_sql(session, Scope("actor", "alice"), [RULE]) == {
        (3, "order-1", "OrderPlaced-then-OrderApproved", 1)
    }
    # Not declared, not reported; and the defaults know nothing of these event types.
    assert by_sql(session, period, []) == set()
    assert by_sql(session, period) == set()


def test_bad_rules_are_refused() -> None:
    with pytest.raises(esa.ValidationError, match="two event types"):
        SegregationRule("OrderPlaced", "")


def test_the_example_domains_declare_their_rules() -> None:
    assert accounts.decider.segregation
    assert orders.decider.segregation
    assert (*accounts.decider.segregation, *orders.decider.segregation) == SEGREGATION_RULES


@pytest.fixture(scope="module")
def sample_rows(sample_lake: Path) -> list[Row]:
    return rows_of(esa.open(sample_lake).read_all().to_arrow())


def _scopes(rows: list[Row]) -> list[tuple[Scope, set[int]]]:
    found = oracle(rows, {r["position"] for r in rows}, SEGREGATION_RULES)
    position, stream, _, _ = min(found)
    breach = next(r for r in rows if r["position"] == position)
    start, end = datetime(2024, 6, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    return [
        (Scope("entity", stream), {r["position"] for r in rows if r["stream"] == stream}),
        (
            Scope("actor", breach["actor"]),
            {r["position"] for r in rows if r["actor"] == breach["actor"]},
        ),
        (
            Scope("correlation", breach["correlation"]),
            {r["position"] for r in rows if r["correlation"] == breach["correlation"]},
        ),
        (
            Scope("period", start=start, end=end),
            {r["position"] for r in rows if start <= r["recorded_at"] < end},
        ),
    ]


def test_the_sample_rules_in_sql_equal_python_in_every_scope_kind(
    sample_lake: Path, sample_rows: list[Row]
) -> None:
    session = Session(esa.open(sample_lake))
    for scope, in_scope in _scopes(sample_rows):
        expected = oracle(sample_rows, in_scope, SEGREGATION_RULES)
        assert expected, scope
        assert by_sql(session, scope) == expected, scope


def test_the_demo_sample_breaches_each_domains_rules() -> None:
    rows = rows_of(generate(SampleSpec(events=200_000, seed=42)))  # what esa demo builds
    found = oracle(rows, {r["position"] for r in rows}, SEGREGATION_RULES)
    breached = {name for _, _, name, _ in found}
    assert breached == {rule.name for rule in SEGREGATION_RULES}


def test_reports_show_the_breach(sample_lake: Path, sample_rows: list[Row]) -> None:
    found = oracle(sample_rows, {r["position"] for r in sample_rows}, SEGREGATION_RULES)
    position, stream, name, first = min(found)
    package = collect(esa.open(sample_lake), Scope("entity", stream))
    shown = [r for r in package.exceptions.to_pylist() if r["kind"] == "segregation"]
    assert [r["global_position"] for r in shown][:1] == [position]
    page = render_html(package)
    assert "segregation" in page
    assert f"{name}: the same actor also did" in page
    assert f"at position {first}" in page
