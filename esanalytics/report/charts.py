"""The charts of an audit report, drawn to static SVG (HTML) or PNG (PDF) by vl-convert, so the
report needs no script and no network: the entity's state evolution and time in each state
(when the catalog has a projection for it), and the timeline of the events in scope (each
event for small scopes, counts per week and type for large ones)."""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd
import pyarrow as pa

from esanalytics._duck import connect
from esanalytics.audit.package import AuditPackage
from esanalytics.viz import entity_timeline, state_evolution, state_intervals

__all__ = ["report_charts"]

#: Up to this many events the timeline shows each one; beyond, counts per week and type.
EACH_EVENT = 1_000


def _numeric(table: pa.Table, skip: tuple[str, ...]) -> str | None:
    for f in table.schema:
        if f.name not in skip and (pa.types.is_decimal(f.type) or pa.types.is_floating(f.type)):
            return str(f.name)
    return None


def report_charts(data: AuditPackage) -> list[tuple[str, Any]]:
    """``(title, chart)`` pairs for the report, in order (empty when nothing is in scope)."""
    charts: list[tuple[str, Any]] = []
    history = data.history
    if history is not None and history.num_rows:
        frame = history.to_pandas()
        field = _numeric(history, ("valid_from", "valid_to", "global_position"))
        if field is not None:
            chart = state_evolution(frame, field, brush=False)
            charts.append((f"{field} over time ({data.projection})", chart))
        if "status" in frame.columns:
            intervals = state_intervals(frame, "status", until=data.as_of)
            charts.append(("Time in each status", intervals))
    trail = data.trail
    if trail.num_rows == 0:
        return charts
    if trail.num_rows <= EACH_EVENT:
        timeline = entity_timeline(trail.drop_columns(["data"]).to_pandas(), brush=False)
        charts.append(("Timeline of the events", timeline))
    else:
        con = connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("trail", trail.select(["recorded_at", "event_type"]))
        weekly: pd.DataFrame = con.sql(
            "SELECT date_trunc('week', recorded_at) AS week, event_type, count(*) AS events "
            "FROM trail GROUP BY ALL ORDER BY ALL"
        ).df()
        charts.append(
            (
                "Events per week, by type",
                alt.Chart(weekly)
                .mark_bar()
                .encode(
                    x=alt.X("week:T", title=None),
                    y=alt.Y("events:Q"),
                    color=alt.Color("event_type:N"),
                    tooltip=["week:T", "event_type:N", "events:Q"],
                )
                .properties(width=640, height=220),
            )
        )
    return charts
