"""What the charts read as once JupyterLab draws them (found walking the notebooks in Lab)."""

from __future__ import annotations

import re
from pathlib import Path

import vl_convert

import esanalytics as esa
from esanalytics import viz
from esanalytics.engine import Session


def test_causation_depth_is_counted_in_whole_steps(sample_lake: Path) -> None:
    """Depth is a count of causes: the axis read 0.0, 0.2, ... 3.0 (the links' layer, drawn
    first, set the axis and had no whole-step rule)."""
    session = Session(esa.open(sample_lake))
    correlation = session.df(
        "SELECT metadata->>'$.correlation_id' FROM events WHERE event_type = 'OrderRefunded'"
    ).iloc[0, 0]
    chart = viz.causation_tree(session, correlation).to_dict()
    svg = vl_convert.vega_to_svg(viz._vega5(chart))  # the Vega 5 that Lab draws
    axis = svg[svg.index('aria-label="X-axis') :]
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", axis)
    ticks = texts[: texts.index("causation depth")]
    assert ticks
    assert all(re.fullmatch(r"\d+", t) for t in ticks), ticks
