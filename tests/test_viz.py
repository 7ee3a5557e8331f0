"""Charts: right numbers (checked against pandas), never over Altair's row limit, saved as
real PNG/SVG/HTML, drawn by a real browser with no network; HTML reprs and %%esql."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import altair as alt
import pandas as pd
import pytest

import esanalytics as esa
from esanalytics import viz
from esanalytics.catalog import account_balances, order_status
from esanalytics.engine import Session
from esanalytics.exceptions import ValidationError
from esanalytics.jupyter import esql
from tests.browser import needs_chromium, open_offline


@pytest.fixture(scope="module")
def session(sample_lake: Path) -> Session:
    return Session(esa.open(sample_lake))


@pytest.fixture(scope="module")
def events(session: Session) -> pd.DataFrame:
    return session.df(
        "SELECT stream_id, event_type, recorded_at, occurred_at, metadata->>'$.actor' AS actor,"
        " metadata->>'$.correlation_id' AS correlation_id, global_position FROM events"
    )


def _rows(chart: alt.TopLevelMixin) -> list[dict]:
    """The rows a chart carries (its datasets), as Altair would send them."""
    spec = chart.to_dict()  # raises MaxRowsError past 5,000 rows
    return [row for rows in spec["datasets"].values() for row in rows]


def test_every_builder_stays_under_the_row_limit(session: Session, events: pd.DataFrame) -> None:
    assert len(events) > viz.MAX_ROWS  # the lake is larger than any chart may carry
    accounts = sorted(events[events.stream_id.str.startswith("account")].stream_id.unique())[:5]
    correlation = events[events.event_type == "OrderRefunded"].correlation_id.iloc[0]
    charts = [
        viz.state_evolution(session, "balance", projection=account_balances, keys=accounts),
        viz.entity_timeline(session, projection=account_balances, key=accounts[0]),
        viz.state_intervals(session, projection=order_status, keys=["order-1", "order-2"]),
        viz.activity_heatmap(session),
        viz.activity_heatmap(session, by="week"),
        viz.bitemporal_scatter(session),
        viz.as_of_view(session, key=accounts[0]),
        viz.causation_tree(session, correlation),
        viz.population(session, "status", projection=account_balances),
    ]
    for chart in charts:
        assert 0 < len(_rows(chart)) <= viz.MAX_ROWS


def test_heatmap_counts_match_pandas(session: Session, events: pd.DataFrame) -> None:
    rows = pd.DataFrame(_rows(viz.activity_heatmap(session)))
    expected = events.groupby(
        [events.recorded_at.dt.hour, events.recorded_at.dt.day_of_week + 1]
    ).size()
    got = rows[rows["events"] > 0].set_index(["hour", "weekday"])["events"]  # 0: a quiet hour
    assert got.sort_index().tolist() == expected.sort_index().tolist()
    alice = pd.DataFrame(
        _rows(viz.activity_heatmap(session, where="metadata->>'$.actor' = 'alice'"))
    )
    assert alice["events"].sum() == (events.actor == "alice").sum()


def test_bitemporal_bins_hold_every_event_and_flag_the_late(
    session: Session, events: pd.DataFrame
) -> None:
    rows = pd.DataFrame(_rows(viz.bitemporal_scatter(session)))
    assert rows["events"].sum() == len(events)
    late_days = (events.recorded_at.dt.floor("D") > events.occurred_at.dt.floor("D")).sum()
    assert rows.loc[rows["late"], "events"].sum() == late_days


def test_population_matches_a_plain_fold(session: Session, sample_lake: Path) -> None:
    """At the last bucket, the count per status equals each account's last status from a
    plain Python walk over the events."""
    rows = pd.DataFrame(_rows(viz.population(session, "status", projection=account_balances)))
    last = rows[rows["bucket"] == rows["bucket"].max()].set_index("state")["entities"]
    status: dict[str, str] = {}
    moves = {"AccountOpened": "open", "AccountFrozen": "frozen", "AccountUnfrozen": "open",
             "AccountClosed": "closed"}  # fmt: skip
    for event in esa.open(sample_lake).read_all():
        if event.event_type in moves:
            status[event.stream_id] = moves[event.event_type]
    expected = pd.Series(status).value_counts()
    assert last[last > 0].sort_index().to_dict() == expected.sort_index().to_dict()


def test_state_evolution_steps_follow_the_history(session: Session) -> None:
    chart = viz.state_evolution(session, "balance", projection=account_balances, keys=["account-3"])
    rows = _rows(chart)
    history = account_balances.history(session, key="account-3").df()
    assert [r["balance"] for r in rows] == [float(v) for v in history["balance"]]
    spec = chart.to_dict()
    assert spec["vconcat"][0]["mark"]["interpolate"] == "step-after"
    selections = [p["select"] for p in spec.get("params", []) if "select" in p]
    kinds = [s if isinstance(s, str) else s["type"] for s in selections]
    assert "interval" in kinds  # the time brush
    assert "point" in kinds  # the legend selection


def test_causation_tree_links_each_event_to_its_cause(
    session: Session, events: pd.DataFrame
) -> None:
    correlation = events[events.event_type == "OrderRefunded"].correlation_id.iloc[0]
    rows = _rows(viz.causation_tree(session, correlation))
    by_id = {r["event_id"]: r for r in rows}
    assert [r["depth"] for r in rows] == list(range(len(rows)))  # a chain in this domain
    for r in rows[1:]:
        assert by_id[r["causation_id"]]["row"] == r["parent_row"]


def test_frames_work_too_and_bad_ones_are_named(session: Session) -> None:
    history = account_balances.history(session, key="account-3").df()
    assert _rows(viz.state_evolution(history, "balance"))
    with pytest.raises(ValidationError, match="needs the column") as caught:
        viz.state_evolution(history.drop(columns=["valid_from"]), "balance")
    assert "Hint:" in str(caught.value)
    big = pd.concat([history] * (viz.MAX_ROWS // len(history) + 1))
    with pytest.raises(ValidationError, match="over the 5,000"):
        viz.state_evolution(big, "balance")
    with pytest.raises(ValidationError, match="needs a projection"):
        viz.state_evolution(session, "balance", keys=["account-3"])
    with pytest.raises(ValidationError, match="no field 'nope'"):
        viz.state_evolution(session, "nope", projection=account_balances, keys=["account-3"])
    with pytest.raises(ValidationError, match="No events carry"):
        viz.causation_tree(session, "no-such-id")


def test_save_writes_real_png_svg_and_self_contained_html(session: Session, tmp_path: Path) -> None:
    chart = viz.activity_heatmap(session)
    png = viz.save(chart, tmp_path / "c.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 400
    assert height > 100
    svg = viz.save(chart, tmp_path / "c.svg").read_text()
    assert svg.startswith("<svg")
    assert svg.count("<path") > 50
    page = viz.save(chart, tmp_path / "c.html").read_text()
    assert 'src="http' not in page
    assert "vegaEmbed" in page
    with pytest.raises(ValidationError, match=r"\.pdf"):
        viz.save(chart, tmp_path / "c.pdf")


@needs_chromium
def test_html_chart_is_drawn_offline_and_requests_nothing(session: Session, tmp_path: Path) -> None:
    chart = viz.state_evolution(session, "balance", projection=account_balances, keys=["account-3"])
    page = viz.save(chart, tmp_path / "chart.html")
    dom, requested = open_offline(page, tmp_path, wait_ms=5_000)
    assert requested == set()
    assert 'class="marks"' in dom  # Vega drew its SVG
    assert "balance over system time" in dom  # the title, drawn as SVG text
    assert dom.count("<path") > 10


def test_the_notebook_renderer_is_offline(session: Session) -> None:
    """Vega 5 with its data inlined, for JupyterLab to draw itself (drawn in a real Lab,
    untrusted: tests/test_lab_untrusted.py), the export menu only, and a PNG beside it."""
    viz.enable()
    try:
        bundle = alt.renderers.get()(viz.activity_heatmap(session).to_dict())
    finally:
        alt.renderers.enable("default")
    out, meta = bundle
    vega = out[viz.VEGA_MIME]
    assert vega["$schema"] == "https://vega.github.io/schema/vega/v5.json"
    assert "url" not in json.dumps(vega["data"])
    assert "text/html" not in out
    assert meta[viz.VEGA_MIME]["embed_options"]["actions"]["editor"] is False
    assert base64.b64decode(out["image/png"])[:4] == b"\x89PNG"


def test_html_reprs_show_the_lake_at_a_glance(sample_lake: Path, store: esa.EventStore) -> None:
    lake = esa.open(sample_lake)
    card = lake._repr_html_()
    inventory = lake.inventory()
    assert f"{inventory.events:,}" in card
    assert "account" in card
    assert "order" in card
    assert "<script" not in card
    store.append("x-1", [esa.NewEvent("Said", {"text": "<script>alert(1)</script>"})])
    shown = store.read_stream("x-1")._repr_html_()
    assert "&lt;script&gt;" in shown
    assert "<script>" not in shown
    assert "events at this cut" in Session(lake)._repr_html_()
    shown = account_balances._repr_html_()
    assert "balance" in shown
    assert 'd."amount"' in shown.replace("&quot;", '"')  # the SQL a field reads, not markers
    assert "\x01" not in shown


def test_esql_magic_runs_sql_at_a_cut(sample_lake: Path) -> None:
    query = "SELECT count(*) AS n FROM events"
    namespace: dict[str, object] = {}
    frame = esql(f"--lake {sample_lake} --as-of 2024-06-01 -o out", query, namespace)
    expected = Session(esa.open(sample_lake), as_of="2024-06-01").df(query)
    assert frame["n"].iloc[0] == expected["n"].iloc[0] > 0
    assert namespace["out"] is frame
    balances = esql(f"--lake {sample_lake}", "SELECT count(*) AS n FROM account_balances", None)
    assert balances["n"].iloc[0] > 0
    with pytest.raises(ValidationError, match="unrecognized arguments") as caught:
        esql(f"--lake {sample_lake} --asof 2024", query)
    assert "Hint:" in str(caught.value)
    with pytest.raises(ValidationError, match=r"naive|time zone|ISO"):
        esql(f"--lake {sample_lake} --as-of yesterday", query)
    json.dumps(frame.to_dict())  # plain data


def test_hostile_values_cannot_escape_the_chart_script() -> None:
    evil = "</script><script>alert(1)</script><!--"
    frame = pd.DataFrame(
        {"key": [evil], "valid_from": pd.to_datetime(["2024-01-01"], utc=True), "balance": [1.0]}
    )
    page = viz.to_html(viz.state_evolution(frame, "balance"))
    assert "alert(1)" in page  # the value is there, as data
    assert "<script>alert(1)" not in page
    assert "<!--" not in page.split("<body>")[1]


def test_as_of_view_fades_exactly_the_events_after_the_cut(session: Session) -> None:
    events = account_balances.trail(session, "account-3").df()
    cut = events["recorded_at"].iloc[len(events) // 2]
    spec = viz.as_of_view(session, key="account-3", cut=cut.isoformat()).to_dict()
    rows = next(iter(spec["datasets"].values()))
    expr = next(p["expr"] for p in spec["params"] if p["name"] == "cut")
    value = int(expr.split(" ? ")[1].split(" : ")[0])  # the cut, until the slider moves
    shown = [r for r in rows if r["ms"] <= value]  # what the chart's opacity test keeps bright
    assert len(shown) == int((events["recorded_at"] <= cut).sum())
    assert 0 < len(shown) < len(rows)
    with pytest.raises(ValidationError, match="time zone"):
        viz.as_of_view(session, key="account-3", cut="2024-06-01T10:00:00")
