"""Charts a person can read: every hour on the heatmap, a clear answer for an empty lake, the
as-of cut shown as a date, titles that name the entity (and no doubled brackets), years on long
time axes, labels that do not overlap, and no mark cut in half at the plot's edge."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import pytest

import esanalytics as esa
from esanalytics import viz
from esanalytics.catalog import account_balances
from esanalytics.engine import Session
from tests.browser import needs_chromium, open_offline


@pytest.fixture(scope="module")
def session(sample_lake: Path) -> Session:
    return Session(esa.open(sample_lake))


@pytest.fixture(scope="module")
def key(sample_lake: Path) -> str:
    streams = esa.open(sample_lake).streams().sort_by([("version", "descending")])
    return str(next(s for s in streams["stream_id"].to_pylist() if s.startswith("account")))


def _rows(chart: alt.TopLevelMixin) -> pd.DataFrame:
    spec = chart.to_dict()
    return pd.DataFrame([row for rows in spec["datasets"].values() for row in rows])


def _panels(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The single-view specs of a chart (a vconcat's panels, a layer's layers)."""
    for part in ("vconcat", "layer"):
        if part in spec:
            return [p for child in spec[part] for p in _panels(child)]
    return [spec]


def _x_axes(chart: alt.TopLevelMixin) -> list[dict[str, Any]]:
    return [p["encoding"]["x"] for p in _panels(chart.to_dict()) if "x" in p.get("encoding", {})]


def _title(chart: alt.TopLevelMixin) -> str:
    spec = chart.to_dict()
    title = spec.get("title") or _panels(spec)[0].get("title")
    return title if isinstance(title, str) else str(title)


def test_the_heatmap_always_has_every_hour_and_weekday(session: Session) -> None:
    # alice works office hours only: hours 0-7 and 19-23 hold none of her events
    chart = viz.activity_heatmap(session, where="metadata->>'$.actor' = 'alice'")
    rows = _rows(chart)
    assert sorted(rows["hour"].unique()) == list(range(24))
    assert sorted(rows["weekday"].unique()) == list(range(1, 8))
    assert len(rows) == 24 * 7
    assert (rows["events"] == 0).any()  # quiet hours are there, as 0
    x = _x_axes(chart)[0]
    assert x["scale"]["domain"] == list(range(24))
    every = _rows(viz.activity_heatmap(session))
    assert every["events"].sum() == len(session.df("SELECT 1 FROM events"))


def test_an_empty_lake_gets_a_hinted_error_not_a_nan_legend(tmp_path: Path) -> None:
    empty = Session(esa.open(tmp_path / "empty", create=True))
    with pytest.raises(viz.ChartDataError) as caught:
        viz.activity_heatmap(empty)
    assert "no events" in caught.value.problem
    assert caught.value.hint


def test_the_as_of_cut_reads_as_a_date(session: Session, key: str) -> None:
    chart = viz.as_of_view(session, key=key, cut="2024-05-01T12:00:00Z")
    spec = chart.to_dict()
    slider = next(p for p in spec["params"] if "bind" in p)
    assert "1970" not in slider["bind"]["name"]
    # Whole days after the first event: the number Lab's renderer prints beside the slider.
    assert slider["bind"]["step"] == 1
    assert "days after" in slider["bind"]["name"]
    assert "utcFormat(cut" in spec["title"]["text"]["expr"]
    svg = viz.to_svg(chart)
    assert f"{key} as of 2024-05-01 12:00 UTC" in svg  # what the reader sees
    assert ".vega-bind input[type=range]+span{display:none}" in viz.to_html(chart)


def test_titles_name_the_entity_once_and_no_brackets_nest(session: Session, key: str) -> None:
    trail = account_balances.trail(session, key).df().assign(stream_id=key)
    history = account_balances.history(session, key=key).df()
    titles = [
        _title(viz.entity_timeline(trail, brush=False)),  # a frame, as the reports pass
        _title(viz.state_intervals(history, "status")),
        _title(viz.state_evolution(history, "balance", brush=False)),
        _title(viz.state_intervals(session, projection=account_balances, keys=[key])),
        _title(viz.population(session, projection=account_balances, every="month")),
    ]
    for title in titles[:4]:
        assert key in title, title
    for title in titles:
        assert "((" not in title, title
        assert "))" not in title, title
        assert not title.startswith("entity:"), title


def test_long_time_axes_name_the_year(session: Session, key: str) -> None:
    charts = [
        viz.entity_timeline(session, projection=account_balances, key=key),
        viz.state_evolution(session, "balance", projection=account_balances, keys=[key]),
        viz.state_intervals(session, projection=account_balances, keys=[key]),
        viz.population(session, projection=account_balances, every="month"),
        viz.bitemporal_scatter(session),
        viz.as_of_view(session, key=key),
    ]
    for chart in charts:
        for x in _x_axes(chart):
            assert "%Y" in x["axis"]["format"], (_title(chart), x)
            assert x["axis"]["labelOverlap"] is True
    scatter = viz.bitemporal_scatter(session).to_dict()["encoding"]
    assert "%Y" in scatter["y"]["axis"]["format"]
    # a short span keeps the default labels (days and hours)
    days = pd.to_datetime(["2024-01-01", "2024-01-03"], utc=True)
    short = pd.DataFrame({"key": ["a", "a"], "valid_from": days, "balance": [1.0, 2.0]})
    assert "format" not in _x_axes(viz.state_evolution(short, "balance", brush=False))[0]["axis"]


def test_marks_at_the_first_and_last_moment_are_not_cut_in_half(session: Session, key: str) -> None:
    charts = [
        viz.entity_timeline(session, projection=account_balances, key=key),
        viz.entity_timeline(session, projection=account_balances, key=key, brush=False),
        viz.as_of_view(session, key=key),
        viz.state_evolution(session, "balance", projection=account_balances, keys=[key]),
    ]
    for chart in charts:
        upper = _x_axes(chart)[0]
        assert upper["scale"]["padding"] >= 10, _title(chart)


@needs_chromium
def test_the_as_of_slider_shows_no_milliseconds_in_a_browser(
    session: Session, key: str, tmp_path: Path
) -> None:
    page = tmp_path / "as-of.html"
    probe = (
        "<script>(() => { const timer = setInterval(() => { const b = document.body;"
        " const label = document.querySelector('.vega-bind label');"
        " const title = document.querySelector('.role-title-text');"
        " if (!label || !title) return; clearInterval(timer);"
        " b.dataset.slider = label.innerText; b.dataset.title = title.textContent; }, 100); })();"
        "</script>"
    )
    chart = viz.as_of_view(session, key=key, cut="2024-05-01T12:00:00Z")
    text = viz.to_html(chart)
    end = text.rindex("</body>")  # the last: Vega's own code holds the words too
    page.write_text(text[:end] + probe + text[end:])
    dom, requested = open_offline(page, tmp_path, wait_ms=6_000)
    assert requested == set()
    slider = re.search(r'data-slider="([^"]*)"', dom)
    title = re.search(r'data-title="([^"]*)"', dom)
    assert slider, dom[-300:]
    assert title, dom[-500:]
    assert not re.search(r"\d{10,}", slider.group(1)), slider.group(1)  # no epoch number
    assert title.group(1) == f"{key} as of 2024-05-01 12:00 UTC"
