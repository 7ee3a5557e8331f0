"""Charts of the log, built on Altair, that work with no network.

Every builder takes a :class:`~esanalytics.engine.Session` (the lake at a cut) or a frame
(pandas or a DuckDB relation) of the documented shape, aggregates in DuckDB first, and returns
an Altair chart of at most :data:`MAX_ROWS` rows, so Altair's 5,000-row limit is never hit
however large the lake. Tooltips carry the audit fields; time charts have a brush, and
legends select.

Rendering offline: Altair's default renderer loads Vega from a CDN and JupyterLab's own
renderer knows only Vega-Lite up to 5, so :func:`enable` installs the ``esanalytics``
renderer, which compiles each chart to Vega 5 (with vl-convert) for JupyterLab to draw with
the Vega it bundles, trusted or not, with a PNG beside it. :func:`save` writes a chart as
self-contained HTML (Vega, Vega-Lite and Vega-Embed inlined), SVG or PNG.

>>> import pandas as pd
>>> frame = pd.DataFrame({"key": ["a", "a"], "valid_from": pd.to_datetime(
...     ["2024-01-01", "2024-02-01"], utc=True), "balance": [1.0, 3.0]})
>>> state_evolution(frame, "balance").to_dict()["vconcat"][0]["mark"]["interpolate"]
'step-after'
"""

from __future__ import annotations

import base64
import functools
import html
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
import pandas as pd

import esanalytics.questions as questions
from esanalytics._duck import connect
from esanalytics._typing import TimeLike
from esanalytics.engine import Session
from esanalytics.events import to_epoch_us, to_utc
from esanalytics.exceptions import ValidationError
from esanalytics.store._atomic import write_whole


@contextmanager
def _hidden(module: str) -> Iterator[None]:
    """Imports inside see ``module`` as not installed; later imports find it again."""
    hide = module not in sys.modules
    if hide:
        sys.modules[module] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if hide and sys.modules.get(module, ...) is None:
            del sys.modules[module]


# Altair imports jsonschema, whose format checkers import every optional validator installed;
# Jupyter's server brings rfc3987_syntax, which builds a grammar for 3-5 s on each import.
# Its one check (the "iri" formats, which no Vega-Lite spec uses) is left out of this process's
# jsonschema, as it is wherever the notebooks extra is not installed.
with _hidden("rfc3987_syntax"):
    import altair as alt

if TYPE_CHECKING:
    from esanalytics.projections import Projection

__all__ = [
    "MAX_ROWS",
    "activity_heatmap",
    "as_of_view",
    "bitemporal_scatter",
    "causation_tree",
    "enable",
    "entity_timeline",
    "population",
    "save",
    "state_evolution",
    "state_intervals",
    "to_html",
    "to_png",
    "to_svg",
]

#: The most rows a chart carries; builders aggregate (or refuse, with a hint) beyond it.
MAX_ROWS = 5_000

Source = Session | pd.DataFrame | duckdb.DuckDBPyRelation
Axis = Literal["system", "valid"]

_EMBED = {"renderer": "svg", "actions": {"export": True, "source": False, "compiled": False, "editor": False}}  # fmt: skip
_AXIS_TIME = {"system": "recorded_at", "valid": "occurred_at"}
_SLIDER_UNITS = (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000))
_AXIS_TITLE = {"system": "system time (recorded)", "valid": "valid time (occurred)"}


class ChartDataError(ValidationError):
    """A chart's data is missing a column or is too large to draw as is."""


# -- rendering -------------------------------------------------------------------------------


def _spec(chart: alt.TopLevelMixin | dict[str, Any]) -> dict[str, Any]:
    return chart if isinstance(chart, dict) else chart.to_dict()


@functools.cache
def _bundle() -> str:
    """Vega, Vega-Lite and Vega-Embed as globals (built once per process: about 3 s)."""
    import vl_convert

    bundle: str = vl_convert.javascript_bundle(None)  # type: ignore[arg-type]  # None: default
    return bundle


def _page(chart: alt.TopLevelMixin | dict[str, Any]) -> str:
    spec = _spec(chart)
    title = spec.get("title") if isinstance(spec.get("title"), str) else "chart"
    # JSON inside a script: escape "<" so no value can close the script or open a comment.
    data = json.dumps(spec).replace("<", "\\u003c")
    draw = f"vegaEmbed('#vis', {data}, {json.dumps(_EMBED)}).catch(console.error);"
    head, body = (
        f'<script type="text/javascript">{_bundle()}</script>',
        f"<script>{draw}</script>",
    )
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(str(title))}</title>"
        "<style>body{margin:0;font-family:sans-serif}#vis.vega-embed{display:flex}"
        ".vega-bind input[type=range]+span{display:none}</style>"
        f'{head}</head>\n<body><div id="vis"></div>{body}</body></html>\n'
    )


def to_html(chart: alt.TopLevelMixin | dict[str, Any]) -> str:
    """A self-contained HTML page of ``chart``: Vega, Vega-Lite and Vega-Embed inlined, so
    it opens with no network; the chart stays interactive (tooltips, brush, legend). The
    menu offers export only (no link to the online Vega editor)."""
    return _page(chart)


def to_svg(chart: alt.TopLevelMixin | dict[str, Any]) -> str:
    """The chart drawn as SVG text (no browser needed)."""
    import vl_convert

    svg: str = vl_convert.vegalite_to_svg(_spec(chart))
    return svg


def to_png(chart: alt.TopLevelMixin | dict[str, Any], *, scale: float = 2.0) -> bytes:
    """The chart drawn as PNG bytes (``scale`` 2 for sharp text on print and HiDPI)."""
    import vl_convert

    png: bytes = vl_convert.vegalite_to_png(_spec(chart), scale=scale)
    return png


def save(chart: alt.TopLevelMixin | dict[str, Any], path: str | Path) -> Path:
    """Write ``chart`` by the file's suffix: ``.html`` (self-contained, interactive),
    ``.svg`` or ``.png``; whole or not at all (a full disk leaves any earlier file as it was)."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".html":
        write_whole(target, to_html(chart))
    elif suffix == ".svg":
        write_whole(target, to_svg(chart))
    elif suffix == ".png":
        write_whole(target, to_png(chart))
    else:
        raise ValidationError(
            f"Cannot save a chart as {suffix or 'a file without a suffix'}.",
            hint="name the file .html, .svg or .png.",
        )
    return target


#: The Vega the notebook output speaks: JupyterLab (and Notebook 7, VS Code) draw it with their
#: own bundled Vega 5, a renderer marked safe, so the chart shows in an untrusted notebook too.
VEGA_MIME = "application/vnd.vega.v5+json"
#: The last Vega-Lite that compiles to Vega 5 (Lab 4 bundles Vega 5.33; Vega-Lite 6 emits Vega 6).
_VEGA5_FROM = "5.21"


def _vega5(spec: dict[str, Any]) -> dict[str, Any]:
    """The chart compiled to a Vega 5 spec (the data inlined, no URL to fetch)."""
    import vl_convert

    try:
        vega: dict[str, Any] = vl_convert.vegalite_to_vega(spec, vl_version=_VEGA5_FROM)
    except ValueError:  # a Vega-Lite 6 feature: compile with the newest, label it Vega 5
        vega = vl_convert.vegalite_to_vega(spec)
        vega["$schema"] = "https://vega.github.io/schema/vega/v5.json"
    return vega


def _notebook_bundle(spec: dict[str, Any], **_: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A notebook output: the chart as Vega 5, which JupyterLab draws itself, interactive,
    trusted or not, with no network; and the same chart as a PNG in the same bundle, which
    front ends that draw no Vega show instead (GitHub, nbviewer, exports, classic Notebook).
    No ``text/html``: Lab prefers HTML to Vega, and strips the script from it in a notebook
    it does not trust, which left the chart blank."""
    title = spec.get("title")
    title = title.get("text") if isinstance(title, dict) else title
    bundle = {
        VEGA_MIME: _vega5(spec),
        "image/png": base64.b64encode(_small_png(spec)).decode(),
        # For a plain-text front end, the chart's title rather than "alt.Chart(...)".
        "text/plain": f"<chart: {title}>" if isinstance(title, str) else "<chart>",
    }
    return bundle, {VEGA_MIME: {"embed_options": _EMBED}}


def _small_png(spec: dict[str, Any]) -> bytes:
    """The chart as a PNG of at most 256 colours (a tenth of the size, the same to the eye)."""
    png = to_png(spec, scale=1.0)
    try:
        from PIL import Image
    except ImportError:  # Pillow comes with fpdf2; without it, the full-colour PNG
        return png
    import io

    small = io.BytesIO()
    Image.open(io.BytesIO(png)).quantize(256, method=Image.Quantize.FASTOCTREE).save(
        small, format="PNG", optimize=True
    )
    return small.getvalue()


def enable() -> None:
    """Render Altair charts offline in JupyterLab, Jupyter Notebook 7 and VS Code: each chart's
    output is Vega 5 with its data, which they draw with their own Vega, interactive, whether
    or not the notebook is trusted, asking no server for anything; a PNG of it rides along
    for viewers that draw no Vega. Our notebooks call it first;
    ``alt.renderers.enable("default")`` undoes it."""
    if "esanalytics" not in alt.renderers.names():
        alt.renderers.register("esanalytics", _notebook_bundle)
    alt.renderers.enable("esanalytics")


# -- data ------------------------------------------------------------------------------------


def _df(
    data: pd.DataFrame | duckdb.DuckDBPyRelation,
    needed: tuple[str, ...],
    what: str,
    *,
    limit: bool = True,
) -> pd.DataFrame:
    """``data`` as a frame with the ``needed`` columns, and (``limit``) no more rows than a
    chart holds."""
    frame = data if isinstance(data, pd.DataFrame) else data.df()
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise ChartDataError(
            f"The {what} chart needs the column(s) {', '.join(missing)}; the data has "
            f"{', '.join(map(str, frame.columns))}.",
            hint="pass a Session instead, or a frame of the shape this builder documents.",
        )
    if limit and len(frame) > MAX_ROWS:
        raise ChartDataError(
            f"The {what} chart would carry {len(frame):,} rows, over the {MAX_ROWS:,} a chart "
            "can hold.",
            hint="pass fewer keys or a shorter period, or pass a Session so the builder "
            "aggregates in DuckDB.",
            cli_hint="give fewer --key, an earlier --as-of, or (population) a --field with few "
            "values such as --field status.",
        )
    return frame


def _connection(source: Source) -> duckdb.DuckDBPyConnection:
    """A connection where ``events`` is the session's view, or the given frame of events."""
    if isinstance(source, Session):
        return source.con
    con = connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("events", source if isinstance(source, pd.DataFrame) else source.df())
    return con


def _query(source: Source, sql: str, what: str, needed: tuple[str, ...] = ()) -> pd.DataFrame:
    """Run ``sql`` (which reads ``events``) on a session, or on a frame of events."""
    # A session runs the query again if compaction moves one of its files meanwhile.
    relation = source.sql(sql) if isinstance(source, Session) else _connection(source).sql(sql)
    return _df(relation.df(), needed, what)


def _decimals_as_floats(frame: pd.DataFrame) -> pd.DataFrame:
    """Columns of DuckDB DECIMALs (Python ``Decimal`` objects) as floats, which Vega plots."""
    decimal = [
        c
        for c in frame.columns
        if frame[c].dtype == object
        and frame[c].notna().any()
        and all(isinstance(v, Decimal) for v in frame[c].dropna())
    ]
    return frame.assign(**{c: frame[c].astype(float) for c in decimal}) if decimal else frame


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


#: Time axes over at least this many days name the year on every label (month names alone
#: repeat from one year to the next).
_YEARS_FROM_DAYS = 60
#: Pixels between the plot's edge and the first or last mark, so no mark is cut in half.
_EDGE = 14


def _time_axis(values: Any, title: str | None = None, **extra: Any) -> alt.Axis:
    """A time axis for ``values``: labels say the year when the span is long, and never
    overlap."""
    times = pd.to_datetime(pd.Series(values), utc=True).dropna()
    long = len(times) > 0 and (times.max() - times.min()).days >= _YEARS_FROM_DAYS
    if long:
        extra.setdefault("format", "%b %Y")
    return alt.Axis(title=title, labelOverlap=True, **extra)


def _who(frame: pd.DataFrame) -> str:
    """The entity (or entities) a chart is about, for its title."""
    column = next((c for c in ("key", "stream_id") if c in frame.columns), None)
    keys = [str(k) for k in sorted(frame[column].dropna().unique())] if column is not None else []
    if not keys:
        return ""
    return keys[0] if len(keys) == 1 else f"{len(keys)} entities"


def _need_projection(
    projection: Projection | None, what: str, field: str | None = None
) -> Projection:
    """The projection a Session-based chart reads (and, when given, one of its fields)."""
    if projection is None:
        raise ValidationError(
            f"The {what} chart of a Session needs a projection.",
            hint="pass projection=account_balances (esanalytics.catalog) or your own.",
        )
    if field is not None and field not in projection.fields:
        raise ValidationError(
            f"The projection {projection.name} has no field {field!r}.",
            hint=f"choose one of {', '.join(projection.fields)}.",
        )
    return projection


def _no_events(session: Session, key: str, projection: Projection | None = None) -> Exception:
    """The error for a key with nothing to draw: an entity of another category than the
    projection reads (its events are there, the projection never folds them), or none."""
    from esanalytics.audit.trail import Scope, empty_scope_error
    from esanalytics.catalog import PROJECTIONS

    category = getattr(projection, "category", None)
    if projection is not None and category is not None:
        found = session.sql(
            "SELECT category FROM events WHERE stream_id = $key LIMIT 1", {"key": key}
        ).fetchall()
        if found and found[0][0] != category:
            theirs = found[0][0]
            fits = [p.name for p in PROJECTIONS.values() if p.category == theirs]
            example = f"e.g. {fits[0]}" if fits else f"one whose category is {theirs!r}"
            return ValidationError(
                f"{key!r} is not an entity of {projection.name}: its events are in category "
                f"{theirs!r}, and {projection.name} folds only category {category!r}.",
                hint=f"draw it with a projection of category {theirs!r} ({example}), or pick "
                f"a key of category {category!r}.",
                cli_hint=f"pass --projection {fits[0] if fits else 'FILE.py'}, or pick a key of "
                f"category {category!r}.",
            )
    return empty_scope_error(session, Scope("entity", key))


def _history(
    source: Source,
    projection: Projection | None,
    field: str,
    keys: list[str] | None,
    axis: Axis,
    what: str,
) -> pd.DataFrame:
    if not isinstance(source, Session):
        return _df(source, ("key", "valid_from", field), what)
    proj = _need_projection(projection, what, field)
    if not keys:
        raise ValidationError(
            f"The {what} chart needs the keys (entities) to draw.",
            hint="pass keys=['account-42', ...]; for every entity at once, use population().",
        )
    parts = [proj.history(source, axis=axis, key=k).df() for k in keys]
    for key, part in zip(keys, parts, strict=True):
        if part.empty:  # a misspelt key would draw an empty chart
            raise _no_events(source, key, proj)
    return _df(pd.concat(parts, ignore_index=True), ("key", "valid_from", field), what)


# -- builders --------------------------------------------------------------------------------


def state_evolution(
    source: Source,
    field: str,
    *,
    projection: Projection | None = None,
    keys: list[str] | None = None,
    axis: Axis = "system",
    brush: bool = True,
) -> alt.VConcatChart | alt.Chart:
    """A step chart of ``field`` over time for one or many entities, on system time (when we
    recorded it) or valid time (when it happened). Data: a Session with ``projection`` and
    ``keys``, or a frame with ``key``, ``valid_from`` and ``field`` (a projection's
    :meth:`~esanalytics.projections.Projection.history`). Click a legend entry to pick one;
    drag on the strip below to zoom (``brush=False`` leaves the strip out)."""
    frame = _history(source, projection, field, keys, axis, "state evolution")
    frame = frame[["key", "valid_from", field]]
    pick = alt.selection_point(fields=["key"], bind="legend")
    frame = _decimals_as_floats(frame)
    numeric = pd.api.types.is_numeric_dtype(frame[field])
    who = _who(frame)
    x_axis = _time_axis(frame["valid_from"])
    base = (
        alt.Chart(frame, title=f"{who + ': ' if who else ''}{field} over {_AXIS_TITLE[axis]}")
        .mark_line(interpolate="step-after", point=True)
        .encode(
            y=alt.Y(field, type="quantitative" if numeric else "nominal"),
            color=alt.Color("key:N", title="entity"),
            opacity=alt.condition(pick, alt.value(1), alt.value(0.15)),
            tooltip=["key:N", alt.Tooltip("valid_from:T", format="%Y-%m-%d %H:%M"), field],
        )
        .properties(width=640, height=260)
        .add_params(pick)
    )
    if not brush:  # a static chart (reports, images): no overview strip
        plain: alt.Chart = base.encode(alt.X("valid_from:T", axis=x_axis).scale(padding=_EDGE))
        return plain
    zoom = alt.selection_interval(encodings=["x"])
    upper = base.encode(alt.X("valid_from:T", axis=x_axis).scale(domain=zoom, padding=_EDGE))
    lower = (
        alt.Chart(frame)
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X("valid_from:T", axis=_time_axis(frame["valid_from"], "drag to zoom")),
            y=alt.Y(field, type="quantitative" if numeric else "nominal", title=None),
            color=alt.Color("key:N", title="entity"),
        )
        .properties(width=640, height=60)
        .add_params(zoom)
    )
    return alt.vconcat(upper, lower)


def entity_timeline(
    source: Source,
    *,
    projection: Projection | None = None,
    key: str | None = None,
    axis: Axis = "system",
    brush: bool = True,
) -> alt.VConcatChart | alt.Chart:
    """Each event of one entity as a mark on the time axis, coloured by actor, with type,
    actor, reason, both times and every field's value before and after it in the tooltip.
    Data: a Session with ``projection`` and ``key``, or a frame like
    :meth:`~esanalytics.projections.Projection.trail` returns."""
    needed = ("event_type", "recorded_at", "occurred_at", "actor")
    if isinstance(source, Session):
        proj = _need_projection(projection, "entity timeline")
        if not key:
            raise ValidationError("The entity timeline needs a key.", hint="pass key='account-42'.")
        frame = _df(proj.trail(source, key), needed, "entity timeline")
        if frame.empty:
            raise _no_events(source, key, proj)
    else:
        frame = _df(source, needed, "entity timeline")
    frame = frame.drop(columns=[c for c in ("data",) if c in frame.columns])
    frame = _decimals_as_floats(frame)
    changes = [c for c in frame.columns if c.endswith(("_before", "_after"))]
    time = _AXIS_TIME[axis]
    pick = alt.selection_point(fields=["actor"], bind="legend")
    tooltip = [
        "event_type:N", "actor:N", "reason:N",
        alt.Tooltip("recorded_at:T", format="%Y-%m-%d %H:%M:%S", title="recorded"),
        alt.Tooltip("occurred_at:T", format="%Y-%m-%d %H:%M:%S", title="occurred"),
        *[c for c in ("version", "global_position") if c in frame.columns],
        *changes,
    ]  # fmt: skip
    who = key or _who(frame) or "events"
    x_axis = _time_axis(frame[time])
    base = (
        alt.Chart(frame, title=f"{who}: events on {_AXIS_TITLE[axis]}")
        .mark_point(filled=True, size=80)
        .encode(
            y=alt.Y("event_type:N", title=None),
            color=alt.Color("actor:N"),
            shape=alt.Shape("actor:N"),
            opacity=alt.condition(pick, alt.value(1), alt.value(0.15)),
            tooltip=tooltip,
        )
        .properties(width=640)
        .add_params(pick)
    )
    if not brush:
        plain: alt.Chart = base.encode(x=alt.X(f"{time}:T", axis=x_axis).scale(padding=_EDGE))
        return plain
    zoom = alt.selection_interval(encodings=["x"])
    upper = base.encode(x=alt.X(f"{time}:T", axis=x_axis).scale(domain=zoom, padding=_EDGE))
    lower = (
        alt.Chart(frame)
        .mark_tick()
        .encode(
            x=alt.X(f"{time}:T", axis=_time_axis(frame[time], "drag to zoom")).scale(padding=_EDGE),
            color=alt.value("#888"),
        )
        .properties(width=640, height=40)
        .add_params(zoom)
    )
    return alt.vconcat(upper, lower)


def state_intervals(
    source: Source,
    field: str = "status",
    *,
    projection: Projection | None = None,
    keys: list[str] | None = None,
    axis: Axis = "system",
    until: TimeLike | None = None,
) -> alt.Chart:
    """How long each entity stayed in each state: one bar per state interval (a Gantt-like
    chart), ``valid_from`` to ``valid_to``. A current state (``valid_to`` null) lasts until
    the cut: ``until`` when given, else the Session's ``as_of`` (on valid time, its
    ``valid_at``, else its ``as_of``), else now. Data: a Session with ``projection`` and
    ``keys``, or a history frame with ``key``, ``valid_from``, ``valid_to`` and ``field``.
    The stays of every entity, as data: :func:`esanalytics.questions.state_intervals`."""
    if until is None and isinstance(source, Session):
        until = (source.valid_at if axis == "valid" else None) or source.as_of
    cut = to_utc(until, what="until") if until is not None else datetime.now(UTC)
    if isinstance(source, Session):
        proj = _need_projection(projection, "state intervals", field)
        if not keys:
            raise ValidationError(
                "The state intervals chart needs the keys (entities) to draw.",
                hint="pass keys=['account-42', ...]; for every entity at once, use "
                "esanalytics.questions.state_intervals() or population().",
            )
        found = questions.state_intervals(source, proj, field, keys=keys, axis=axis, until=cut)
        stays = found.df()
        for key in keys:
            if not (stays["key"] == key).any():  # a misspelt key would draw an empty chart
                raise _no_events(source, key, proj)
        stays = _df(stays, (), "state intervals")
    else:
        frame = _df(source, ("key", "valid_from", field), "state intervals")
        if "valid_to" not in frame.columns:
            raise ChartDataError(
                "The state intervals chart needs a valid_to column.",
                hint="pass a projection's history(), which has valid_from and valid_to.",
            )
        naive = getattr(frame["valid_from"].dt, "tz", None) is None  # naive (UTC) times
        con = connect()
        con.execute("SET TimeZone = 'UTC'")
        con.register("_esa_history", frame[["key", "valid_from", "valid_to", field]])
        stays = con.sql(questions.stays_sql("_esa_history", field, cut, naive=naive)).df()
    pick = alt.selection_point(fields=["state"], bind="legend")
    chart: alt.Chart = (
        alt.Chart(
            stays, title=f"{_who(stays) or 'entities'}: time in each {field} on {_AXIS_TITLE[axis]}"
        )
        .mark_bar(height={"band": 0.7})
        .encode(
            x=alt.X("start:T", axis=_time_axis(pd.concat([stays["start"], stays["end"]]))),
            x2="end:T",
            y=alt.Y("key:N", title=None),
            color=alt.Color("state:N", title=field),
            opacity=alt.condition(pick, alt.value(1), alt.value(0.2)),
            tooltip=[
                "key:N",
                alt.Tooltip("state:N", title=field),
                alt.Tooltip("start:T", format="%Y-%m-%d %H:%M"),
                alt.Tooltip("end:T", format="%Y-%m-%d %H:%M"),
                "days:Q",
                "open:N",
            ],
        )
        .properties(width=640)
        .add_params(pick)
    )
    return chart


def activity_heatmap(
    source: Source,
    *,
    by: Literal["hour", "week"] = "hour",
    where: str = "TRUE",
    axis: Axis = "system",
) -> alt.Chart:
    """Events counted by weekday and hour of day (``by="hour"``: after-hours work stands
    out) or by week and weekday (``by="week"``: spikes stand out), in UTC. ``where`` is a
    SQL filter on the events (e.g. ``"metadata->>'$.actor' = 'alice'"``). Data: a Session, or
    a frame of events with ``recorded_at``/``occurred_at`` (and whatever ``where`` reads)."""
    if by == "hour":
        x = alt.X("hour:O", title="hour of day (UTC)", scale=alt.Scale(domain=list(range(24))))
    elif by == "week":
        x = alt.X("week:T", title="week", timeUnit="yearweek")
    else:
        raise ValidationError(
            f"Unknown heatmap grouping {by!r}.", hint="use by='hour' or by='week'."
        )
    # Every hour and weekday (and week) is on the axes, an empty one as 0: a quiet hour is
    # an answer too.
    frame = _query(source, questions.activity_sql(by, where=where, axis=axis), "activity heatmap")
    if not frame["events"].any():
        raise ChartDataError(
            "There are no events to show in the activity heatmap.",
            hint="the lake (at this cut, with this filter) is empty: append or ingest events, "
            "or pick a later --as-of or a wider where=.",
        )
    names = {1: "Mon", 2: "Tue", 3: "Wed", 4: "Thu", 5: "Fri", 6: "Sat", 7: "Sun"}
    frame["day"] = frame["weekday"].map(names)
    chart: alt.Chart = (
        alt.Chart(frame, title=f"activity by {'hour and weekday' if by == 'hour' else 'week'}")
        .mark_rect()
        .encode(
            x=x,
            y=alt.Y("day:O", sort=list(names.values()), title=None),
            color=alt.Color("events:Q", scale=alt.Scale(scheme="blues")),
            tooltip=[c for c in frame.columns if c not in ("weekday",)],
        )
        .properties(width=640 if by == "week" else 480, height=180)
    )
    return chart


def bitemporal_scatter(source: Source, *, where: str = "TRUE") -> alt.Chart:
    """Valid time against system time, binned (by day, or by week or month when a day
    grid would pass :data:`MAX_ROWS`): events on the diagonal were recorded when they
    happened; back-dated ones sit below it, coloured by how late they were booked."""
    con = _connection(source)
    # One pass over the events, by day; coarser grids roll that small table up.
    by_day = f"""SELECT date_trunc('day', recorded_at) AS recorded, date_trunc('day', occurred_at) AS occurred,
                   count(*) AS events, max(epoch(recorded_at) - epoch(occurred_at)) AS late_s,
                   any_value(event_type) AS an_event_type
            FROM events WHERE {where} GROUP BY ALL"""
    days = (source.sql(by_day) if isinstance(source, Session) else con.sql(by_day)).to_arrow_table()
    con.register("_esa_days", days)
    try:
        for unit in ("day", "week", "month"):
            rolled = con.sql(
                f"""SELECT date_trunc('{unit}', recorded) AS recorded,
                           date_trunc('{unit}', occurred) AS occurred, sum(events) AS events,
                           round(max(late_s) / 86400, 1) AS max_days_late,
                           any_value(an_event_type) AS an_event_type
                    FROM _esa_days GROUP BY ALL ORDER BY ALL"""
            )
            if len(rolled) <= MAX_ROWS:
                frame = _df(rolled, (), "bitemporal scatter")
                break
        else:
            raise ChartDataError(
                "Even by month the bitemporal grid is too large to draw.",
                hint="narrow it with where=, e.g. one category or one year.",
            )
    finally:
        con.unregister("_esa_days")
    frame["late"] = frame["recorded"] > frame["occurred"]
    chart: alt.Chart = (
        alt.Chart(frame, title=f"valid time against system time (by {unit})")
        .mark_circle(opacity=0.7)
        .encode(
            x=alt.X(
                "recorded:T",
                axis=_time_axis(frame["recorded"], "recorded (system time)", labelAngle=-40),
            ),
            y=alt.Y("occurred:T", axis=_time_axis(frame["occurred"], "occurred (valid time)")),
            size=alt.Size("events:Q", scale=alt.Scale(type="sqrt")),
            color=alt.Color(
                "max_days_late:Q", scale=alt.Scale(scheme="orangered"), title="days late"
            ),
            tooltip=[
                alt.Tooltip("recorded:T", format="%Y-%m-%d"),
                alt.Tooltip("occurred:T", format="%Y-%m-%d"),
                "events:Q",
                "max_days_late:Q",
                "an_actor:N",
                "an_event_type:N",
            ],
        )
        .properties(width=480, height=480)
        .interactive()
    )
    return chart


def as_of_view(
    source: Source, *, key: str | None = None, cut: Any = None, where: str = "TRUE"
) -> alt.Chart:
    """Events on system time; those recorded after the cut fade out. A slider moves the cut
    where the renderer is interactive (JupyterLab, the HTML file); PNG and SVG show ``cut``
    (default: the middle of the range). Data: a Session (``key`` picks one entity), or a
    frame of events."""
    if isinstance(source, Session) and key:
        source = source.sql(f"SELECT * FROM {source.stream_events(key)}")
    frame = _query(
        source,
        f"""SELECT global_position, stream_id, version, event_type, recorded_at, occurred_at,
                   metadata->>'$.actor' AS actor, metadata->>'$.reason' AS reason
            FROM events WHERE {where} ORDER BY global_position""",
        "as-of view",
    )
    if frame.empty:
        raise ChartDataError("There are no events to show.", hint="check the key or the filter.")
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    since = pd.to_datetime(frame["recorded_at"], utc=True) - epoch
    frame["ms"] = since // pd.Timedelta(milliseconds=1)
    lo, hi = int(frame["ms"].min()), int(frame["ms"].max())
    start = (lo + hi) // 2 if cut is None else to_epoch_us(cut, what="cut") // 1000
    # The slider counts whole days (hours, minutes on a short log) after the first event:
    # Vega prints a range's value beside it, and JupyterLab's renderer takes no style to
    # hide it, so the value must read as something. ``cut`` is the cut in ms: exactly the
    # one asked for until the slider moves.
    unit, unit_ms = next((u, ms) for u, ms in _SLIDER_UNITS if hi - lo >= 3 * ms or u == "minute")
    first = pd.Timestamp(lo, unit="ms", tz="UTC")
    at = round((start - lo) / unit_ms)
    slider = alt.param(
        name="cut_at", value=at,
        bind=alt.binding_range(min=0, max=-(-(hi - lo) // unit_ms), step=1, name=f"move the cut: {unit}s after {first:%Y-%m-%d %H:%M} UTC "),
    )  # fmt: skip
    cut_ms = alt.param(name="cut", expr=f"cut_at == {at} ? {start} : {lo} + cut_at * {unit_ms}")
    # The title names the cut as a date (UTC), and follows the slider.
    title = alt.Title(
        text=alt.ExprRef(
            f"{json.dumps((key or 'events') + ' as of ')} + utcFormat(cut, '%Y-%m-%d %H:%M') + ' UTC'"
        )
    )
    chart: alt.Chart = (
        alt.Chart(frame, title=title)
        .mark_point(filled=True, size=70)
        .encode(
            x=alt.X(
                "recorded_at:T",
                axis=_time_axis(frame["recorded_at"], "recorded (system time)"),
            ).scale(padding=_EDGE),
            y=alt.Y("event_type:N", title=None),
            color=alt.Color("actor:N"),
            opacity=alt.condition("datum.ms <= cut", alt.value(1.0), alt.value(0.12)),
            tooltip=[
                "global_position:Q",
                "stream_id:N",
                "version:Q",
                "event_type:N",
                "actor:N",
                "reason:N",
                alt.Tooltip("recorded_at:T", format="%Y-%m-%d %H:%M:%S"),
                alt.Tooltip("occurred_at:T", format="%Y-%m-%d %H:%M:%S"),
            ],
        )
        .properties(width=640)
        .add_params(slider, cut_ms)
    )
    return chart


def causation_tree(source: Source, correlation_id: str | None = None) -> alt.LayerChart:
    """The events of one correlation id as a tree: each event sits one level right of the
    event (or command) that caused it, in recorded order top to bottom, with a line to its
    cause. Data: a Session and ``correlation_id``, or a frame of those events."""
    if isinstance(source, Session):
        if not correlation_id:
            raise ValidationError(
                "The causation tree needs a correlation id.", hint="pass correlation_id='...'."
            )
        # A plain substring test first skips parsing the JSON of every other event.
        where = (
            f"contains(metadata, {_quote(correlation_id)}) "
            f"AND metadata->>'$.correlation_id' = {_quote(correlation_id)}"
        )
    else:
        where = "TRUE"
    frame = _query(
        source,
        f"""SELECT event_id, stream_id, event_type, recorded_at, occurred_at,
                   metadata->>'$.actor' AS actor, metadata->>'$.reason' AS reason,
                   metadata->>'$.causation_id' AS causation_id,
                   metadata->>'$.command' AS command
            FROM events WHERE {where} ORDER BY global_position""",
        "causation tree",
    )
    if frame.empty:
        raise ChartDataError(
            f"No events carry the correlation id {correlation_id!r}.",
            hint="copy it from an event's metadata (correlation_id).",
        )
    depth: dict[str, int] = {}
    row_of: dict[str, int] = {}
    parents = []
    for row, (event_id, cause) in enumerate(
        zip(frame["event_id"], frame["causation_id"], strict=True)
    ):
        parent = cause if cause in depth else None
        depth[event_id] = depth[parent] + 1 if parent else 0
        row_of[event_id] = row
        parents.append(parent)
    frame["depth"] = [depth[e] for e in frame["event_id"]]
    frame["row"] = range(len(frame))
    frame["parent_depth"] = [depth[p] if p else None for p in parents]
    frame["parent_row"] = [row_of[p] if p else None for p in parents]
    frame["label"] = frame["event_type"] + " · " + frame["stream_id"]
    tooltip = ["event_type:N", "stream_id:N", "actor:N", "reason:N", "command:N",
               alt.Tooltip("recorded_at:T", format="%Y-%m-%d %H:%M:%S"), "event_id:N", "causation_id:N"]  # fmt: skip
    base = alt.Chart(frame)
    y = alt.Y("row:O", axis=None)
    # Depth counts causes: whole steps on every layer (Vega-Lite 5 takes the first layer's axis).
    depth_axis = alt.Axis(tickMinStep=1, format="d")
    links = base.mark_rule(color="#999").encode(
        x=alt.X("parent_depth:Q", title="causation depth", axis=depth_axis),
        y=alt.Y("parent_row:O", axis=None), x2="depth:Q", y2="row:O",
    ).transform_filter("datum.parent_row != null")  # fmt: skip
    nodes = base.mark_circle(size=140).encode(
        x=alt.X("depth:Q", title="causation depth", axis=depth_axis),
        y=y, color=alt.Color("stream_id:N", title="stream"), tooltip=tooltip,
    )  # fmt: skip
    labels = base.mark_text(align="left", dx=10, fontSize=11).encode(
        x="depth:Q", y=y, text="label:N"
    )
    return alt.LayerChart(
        layer=[links, nodes, labels],
        title=f"causation tree of {correlation_id or 'the events'}",
        width=520,
        height=max(22 * len(frame), 60),
    )


def population(
    source: Source,
    field: str = "status",
    *,
    projection: Projection | None = None,
    every: Literal["day", "week", "month"] = "week",
    axis: Axis = "system",
) -> alt.Chart:
    """How many entities were in each state over time: each entity counts, at the end of
    every ``every``, in the state it was then in. Computed in DuckDB from state changes
    (+1 on entering a state, -1 on leaving it), so it stays small for any lake; a grid that
    would pass :data:`MAX_ROWS` is drawn by week or month instead, and the title says so
    (:func:`esanalytics.questions.population` gives every bucket as data). Data: a
    Session with ``projection``, or a history frame with ``key``, ``valid_from``,
    ``valid_to`` and ``field``."""
    units: list[Literal["day", "week", "month"]] = ["day", "week", "month"]
    if every not in units:
        raise ValidationError(
            f"Unknown bucket {every!r}.", hint="use every='day', 'week' or 'month'."
        )
    if isinstance(source, Session):
        proj = _need_projection(projection, "population", field)
        stays: Any = questions.state_intervals(source, proj, field, axis=axis).to_arrow_table()
        con = source.con
    else:
        con = connect()
        con.execute("SET TimeZone = 'UTC'")
        # The history is read, not drawn: any length.
        needed = ("key", "valid_from", "valid_to", field)
        con.register("_esa_history", _df(source, needed, "population", limit=False)[list(needed)])
        stays = con.sql(
            questions.stays_sql("_esa_history", field, datetime.now(UTC))
        ).to_arrow_table()
        con.unregister("_esa_history")
    con.register("_esa_stays", stays)
    try:
        # A grid over MAX_ROWS is drawn by coarser buckets (questions.population has them all).
        for unit in units[units.index(every) :]:
            rows = con.sql(questions.population_sql("_esa_stays", unit)).df()
            if len(rows) <= MAX_ROWS:
                break
        frame = _df(rows, ("bucket", "state", "entities"), "population")
    finally:
        con.unregister("_esa_stays")
    coarser = (
        f" (by {every} would pass the {MAX_ROWS:,} rows a chart holds)" if unit != every else ""
    )
    pick = alt.selection_point(fields=["state"], bind="legend")
    chart: alt.Chart = (
        alt.Chart(frame, title=f"entities per {field}, by {unit}{coarser}, on {_AXIS_TITLE[axis]}")
        .mark_area(interpolate="step-after")
        .encode(
            x=alt.X("bucket:T", axis=_time_axis(frame["bucket"])),
            y=alt.Y("entities:Q", stack=True),
            color=alt.Color("state:N", title=field),
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.2)),
            tooltip=[alt.Tooltip("bucket:T", format="%Y-%m-%d"), "state:N", "entities:Q"],
        )
        .properties(width=640, height=260)
        .add_params(pick)
    )
    return chart
