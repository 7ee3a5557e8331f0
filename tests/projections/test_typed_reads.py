"""For random payload shapes (fields that change type between events and between files, go
missing, hold nulls, objects and arrays, big and negative numbers, decimals of varying scale,
booleans, numbers as strings), a projection's answers read through the typed twins are the
answers read from the JSON alone (``Session(typed=False)``), and both equal a plain Python
fold. The fold takes each event's field values from DuckDB casting that one event's JSON
text (what ``data()`` means), and does the cut, the order and the reducers itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.engine import Session
from esanalytics.projections import Count, First, Last, Max, Min, Projection, Sum, data

BASE = datetime(2024, 1, 1, tzinfo=UTC)
TYPES = ("A", "B", "C")
#: Every reducer over fields read as several types (the same field as text, integer,
#: decimal, double, boolean), so each meets twins of every stored type.
PROJECTION = Projection(
    "shapes",
    {
        "last_text": Last(data("f0"), on=["A", "B"]),
        "last_int": Last(data("f0", "BIGINT"), on=["A"]),
        "total": Sum(data("f1", "DECIMAL(18,3)"), on={"A": 1, "B": -1}),
        "highest": Max(data("f1", "DOUBLE"), on=["A", "B", "C"]),
        "lowest": Min(data("f2", "BIGINT"), on=["B"]),
        "first_flag": First(data("f2", "BOOLEAN"), on=["A", "B", "C"]),
        "c_events": Count(on=["C"]),
        "last_rounded": Last(data("f1", "DECIMAL(18,1)"), on=["C"]),
        "sum_int": Sum(data("f2", "BIGINT"), on={"C": 1}),
        "top_small": Max(data("f2", "INTEGER"), on=["A"]),
        "top_text": Max(data("f1", "VARCHAR"), on=["A", "C"]),
    },
    category="acct",
)
FIELDS = tuple(PROJECTION.reducers)

INTEGER = st.one_of(
    st.integers(-(10**19), 10**19).map(str),
    st.sampled_from(["0", "-1", "9223372036854775807", "2147483648", "1e3"]),
)
DECIMAL = st.one_of(
    st.tuples(st.integers(-(10**6), 10**6), st.integers(0, 10**6), st.integers(1, 6)).map(
        lambda t: f"{t[0]}.{str(t[1]).zfill(t[2])[: t[2]]}"
    ),
    st.sampled_from(["-0.0", "1.50", "0.05", "12345678901234.5", "2.25"]),
)
BOOLEAN = st.sampled_from(["true", "false"])
ANY = st.one_of(
    INTEGER, DECIMAL, BOOLEAN, st.just("null"),
    st.sampled_from(['"12"', '"1.5"', '"true"', '"x"', '""', '{"a": 1}', "[1, 2]", "[]"]),
)  # fmt: skip
CLASSES = (INTEGER, DECIMAL, BOOLEAN, ANY)


@st.composite
def logs(draw: st.DrawFn) -> list[list[dict[str, Any]]]:
    """Batches of events (each batch a file, or the unsealed tail for the last): a field
    keeps to one class of values within a batch in most examples (so twins of different
    files store it as different types), and mixes them in others."""
    batches = []
    for _ in range(draw(st.integers(1, 4))):
        classes = {f: draw(st.sampled_from(CLASSES)) for f in ("f0", "f1", "f2")}
        batch = []
        for _ in range(draw(st.integers(1, 12))):
            fields = {f: draw(c) for f, c in classes.items() if draw(st.integers(0, 3))}
            if fields and draw(st.integers(0, 9)) == 0:
                fields[draw(st.sampled_from(sorted(fields)))] = "null"
            text = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
            batch.append(
                {
                    "stream": f"acct-{draw(st.integers(0, 3))}",
                    "category": draw(st.sampled_from(["acct", "acct", "acct", "other"])),
                    "type": draw(st.sampled_from(TYPES)),
                    "text": text,
                    "gap": draw(st.integers(1, 20 * 24 * 60)),  # minutes: batches span months
                    "back": draw(st.sampled_from([0, 0, 30, 3000])),  # minutes back-dated
                }
            )
        batches.append(batch)
    return batches


def build(lake: Path, batches: list[list[dict[str, Any]]], compacted: int) -> list[dict[str, Any]]:
    """Ingest the batches (the first ``compacted`` then compacted: files with twins; the
    rest as files without), numbering and timing the events as the store will."""
    store = esa.open(lake, create=True)
    recorded, events, versions = BASE, [], {}  # type: ignore[var-annotated]
    for index, batch in enumerate(batches):
        rows = []
        for e in batch:
            recorded += timedelta(minutes=e["gap"])
            stream = f"{e['category']}-{e['stream']}"
            versions[stream] = versions.get(stream, 0) + 1
            row = {**e, "stream": stream, "recorded_at": recorded,
                   "occurred_at": recorded - timedelta(minutes=e["back"]),
                   "version": versions[stream], "position": len(events) + 1}  # fmt: skip
            events.append(row)
            rows.append(row)
        store.ingest(
            pa.table(
                {
                    "stream_id": [r["stream"] for r in rows],
                    "category": [r["category"] for r in rows],
                    "event_type": [r["type"] for r in rows],
                    "data": [r["text"] for r in rows],
                    "metadata": ["{}"] * len(rows),
                    "recorded_at": pa.array([r["recorded_at"] for r in rows], pa.timestamp("us", "UTC")),
                    "occurred_at": pa.array([r["occurred_at"] for r in rows], pa.timestamp("us", "UTC")),
                }
            )
        )  # fmt: skip
        if index + 1 == compacted:
            store.compact()
    _values(events)
    return events


def _values(events: list[dict[str, Any]]) -> None:
    """Each event's value of each data() of the projection: DuckDB's cast of that one
    event's field text, ``TRY_CAST(text->>'$.field' AS type)``."""
    pairs = sorted(
        {
            (path, sql_type)
            for r in PROJECTION.reducers.values()
            for path, sql_type in _data_of(getattr(r, "value", ""))
        }
    )
    con = duckdb.connect()
    con.register("texts", pa.table({"t": [e["text"] for e in events]}))
    casts = ", ".join(f"TRY_CAST(t->>'$.{p}' AS {s})" for p, s in pairs)
    for e, row in zip(events, con.sql(f"SELECT {casts} FROM texts").fetchall(), strict=True):
        e["values"] = dict(zip(pairs, row, strict=True))


def _data_of(sql: str) -> list[tuple[str, str]]:
    """The (field, SQL type) of each ``data()`` in a reducer's SQL."""
    import re

    return re.findall(r"\x01([^\x02]*)\x02([^\x03]*)\x03", sql)


def fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    """One stream's state after ``events`` (in fold order), as the reducers define it."""
    state: dict[str, Any] = {}
    for name, r in PROJECTION.reducers.items():
        pair = _data_of(getattr(r, "value", ""))
        on = r.on
        picked = [e for e in events if e["type"] in on]
        if isinstance(r, Count):
            state[name] = len(picked)
            continue
        values = [e["values"][pair[0]] for e in picked]
        present = [v for v in values if v is not None]
        if isinstance(r, Sum):
            signs = [r.on[e["type"]] for e in picked]
            state[name] = sum(
                (s * v for s, v in zip(signs, values, strict=True) if v is not None), 0
            )
        elif isinstance(r, Last):
            state[name] = present[-1] if present else None
        elif isinstance(r, First):
            state[name] = present[0] if present else None
        elif isinstance(r, Max):
            state[name] = max(present) if present else None
        elif isinstance(r, Min):
            state[name] = min(present) if present else None
    return state


def _order(axis: str) -> Any:
    """The fold order of an axis: log position, or (occurred_at, version)."""
    if axis == "valid":
        return lambda e: (e["occurred_at"], e["version"])
    return lambda e: e["position"]


def reference(events: list[dict[str, Any]], **cut: Any) -> dict[str, tuple[Any, ...]]:
    """The plain fold's state at a cut: the events inside it, each stream folded in order."""
    kept = [
        e for e in events
        if e["category"] == "acct"
        and (cut.get("as_of") is None or e["recorded_at"] <= cut["as_of"])
        and (cut.get("valid_at") is None or e["occurred_at"] <= cut["valid_at"])
        and (cut.get("position") is None or e["position"] <= cut["position"])
    ]  # fmt: skip
    by: dict[str, list[dict[str, Any]]] = {}
    for e in sorted(kept, key=_order("valid" if cut.get("valid_at") else "system")):
        by.setdefault(e["stream"], []).append(e)
    return {
        key: (*(fold(es)[f] for f in FIELDS), len(es), max(e["position"] for e in es))
        for key, es in by.items()
    }


def reference_history(events: list[dict[str, Any]], axis: str) -> list[tuple[Any, ...]]:
    """Each stream's states on an axis, from the fold after each event: the states that
    lasted some time, and the current one."""
    time = "recorded_at" if axis == "system" else "occurred_at"
    by: dict[str, list[dict[str, Any]]] = {}
    for e in sorted((e for e in events if e["category"] == "acct"), key=_order(axis)):
        by.setdefault(e["stream"], []).append(e)
    rows = []
    for key, es in by.items():
        for i, e in enumerate(es):
            until = es[i + 1][time] if i + 1 < len(es) else None
            if until is None or until > e[time]:
                state = fold(es[: i + 1])
                rows.append((key, e[time], until, *(state[f] for f in FIELDS), e["position"]))
    return sorted(rows, key=lambda r: (r[0], r[1], r[-1]))


def state_rows(relation: Any) -> dict[str, tuple[Any, ...]]:
    """A state's rows by key, as :func:`reference` gives them."""
    return {
        row["key"]: (*(row[f] for f in FIELDS), row["events"], row["last_position"])
        for row in relation.to_arrow_table().to_pylist()
    }


def history_rows(relation: Any) -> list[tuple[Any, ...]]:
    """A history's rows, as :func:`reference_history` gives them."""
    return [
        (r["key"], r["valid_from"], r["valid_to"], *(r[f] for f in FIELDS), r["global_position"])
        for r in relation.to_arrow_table().to_pylist()
    ]


def plain(relation: Any) -> list[dict[str, Any]]:
    """A relation's rows as dicts."""
    return list(relation.to_arrow_table().to_pylist())


minutes = st.one_of(st.none(), st.integers(0, 4 * 12 * 20 * 24 * 60))


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=logs(), compacted=st.integers(0, 4), sys_cut=minutes, valid_cut=minutes,
       pos_cut=st.one_of(st.none(), st.integers(0, 50)))  # fmt: skip
def test_typed_answers_equal_the_json_answers_and_the_fold(
    tmp_path: Path,
    batches: list[list[dict[str, Any]]],
    compacted: int,
    sys_cut: int | None,
    valid_cut: int | None,
    pos_cut: int | None,
) -> None:
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    events = build(lake, batches, compacted)
    store = esa.open(lake)
    typed, json_only = Session(store, threads=1), Session(store, threads=1, typed=False)
    assert typed.has_twins("acct") == any(
        e.typed is not None and e.category == "acct" for e in store.files()
    )
    cut: dict[str, Any] = {}
    if sys_cut is not None:
        cut["as_of"] = BASE + timedelta(minutes=sys_cut)
    if valid_cut is not None:
        cut["valid_at"] = BASE + timedelta(minutes=valid_cut)
    if pos_cut is not None:
        cut["position"] = pos_cut
    for each in ({}, cut):
        expected = reference(events, **each)
        assert state_rows(PROJECTION.state(typed, **each)) == expected
        assert state_rows(PROJECTION.state(json_only, **each)) == expected
    for axis in ("system", "valid"):
        expected_history = reference_history(events, axis)
        assert history_rows(PROJECTION.history(typed, axis=axis)) == expected_history  # type: ignore[arg-type]
        assert history_rows(PROJECTION.history(json_only, axis=axis)) == expected_history  # type: ignore[arg-type]
    middle = len(events) // 2
    for session in (typed, json_only):
        changes = plain(PROJECTION.diff(session, {"position": middle}))
        before, after = reference(events, position=middle), reference(events)
        assert {c["key"]: c["change"] for c in changes} == {
            k: "added" if k not in before else "removed" if k not in after else "changed"
            for k in before.keys() | after.keys()
            if before.get(k, (None,))[: len(FIELDS)] != after.get(k, (None,))[: len(FIELDS)]
        }
        since = plain(PROJECTION.since(session, middle))
        assert {r["key"]: r["new_events"] for r in since} == {
            k: v[-2] - before.get(k, (0, 0))[-2] for k, v in after.items() if v[-1] > middle
        }
    assert plain(PROJECTION.diff(typed, {"position": middle})) == plain(
        PROJECTION.diff(json_only, {"position": middle})
    )
    assert plain(PROJECTION.since(typed, middle)) == plain(PROJECTION.since(json_only, middle))
    # A session pinned at the cut, and the SQL macros of a registered projection.
    if cut:  # a session pinned at the cut: its views hold only the events up to it
        pinned = Session(store, threads=1, **cut)
        assert state_rows(PROJECTION.state(pinned)) == reference(events, **cut)
    for session in (typed, json_only):
        PROJECTION.register(session)
        assert state_rows(session.sql("SELECT * FROM shapes")) == reference(events)
        for macro, key in (
            ("as_of", "as_of"),
            ("valid_at", "valid_at"),
            ("at_position", "position"),
        ):
            if key in cut:
                value = cut[key] if key == "position" else f"'{cut[key].isoformat()}'"
                assert state_rows(
                    session.sql(f"SELECT * FROM shapes_{macro}({value})")
                ) == reference(events, **{key: cut[key]})
    # The user views: the same rows with and without twins, every value the JSON's, exactly.
    assert set(typed.category_views) == set(json_only.category_views)
    for category, view in typed.category_views.items():
        ordered = f"SELECT * FROM {view} ORDER BY global_position"
        assert plain(typed.sql(ordered)) == plain(json_only.sql(ordered))
        assert_exact(typed, view, category)


def assert_exact(session: Session, view: str, category: str) -> None:
    """Every typed column of ``view`` holds, for every event, the JSON's value: present
    exactly where the JSON text is, the same text (VARCHAR), the same number (no rounding)."""
    columns = session.sql(f"DESCRIBE {view}").fetchall()[8:]
    assert (
        session.sql(f"SELECT count(*) FROM {view}").fetchall()
        == session.sql(f"SELECT count(*) FROM events WHERE category = '{category}'").fetchall()
    )
    for name, kind, *_ in columns:
        field = name.removeprefix("data.")
        text = f"e.data->>'$.{field}'"
        if kind == "VARCHAR":
            same = f'v."{name}" IS NOT DISTINCT FROM {text}'
        elif kind == "BOOLEAN":
            same = f'v."{name}" IS NOT DISTINCT FROM TRY_CAST({text} AS BOOLEAN)'
        else:
            same = f'CAST(v."{name}" AS DOUBLE) IS NOT DISTINCT FROM TRY_CAST({text} AS DOUBLE)'
        wrong = session.sql(
            f'SELECT e.data, v."{name}" FROM {view} v JOIN events e USING (global_position) '
            f'WHERE ((v."{name}" IS NULL) <> ({text} IS NULL)) OR NOT ({same})'
        ).fetchall()
        assert wrong == [], (name, kind)


def test_materialized_refreshes_read_the_twins_and_the_tail_alike(tmp_path: Path) -> None:
    """A rebuild over twinned files, then an incremental refresh over a file without a twin
    and the unsealed tail: the stored state is the state read from the JSON alone."""
    from esanalytics.materialized import MaterializedProjection

    batches = [
        [
            {"stream": f"acct-{i % 3}", "category": "acct", "type": TYPES[i % 3],
             "text": f'{{"f0": {i}, "f1": {i}.{i % 7}5, "f2": {"true" if i % 2 else "false"}}}',
             "gap": 60 * 24 * 9, "back": 0}
            for i in range(12)
        ],
        [
            {"stream": "acct-1", "category": "acct", "type": t,
             "text": '{"f0": "x", "f1": 2.125, "f2": 3}', "gap": 5, "back": 0}
            for t in TYPES
        ],
    ]  # fmt: skip
    lake = tmp_path / "lake"
    build(lake, batches[:1], compacted=1)
    store = esa.open(lake)
    assert all(e.typed is not None for e in store.files())
    view = MaterializedProjection(store, PROJECTION)
    assert view.refresh().mode == "rebuild"
    store.ingest(  # a file without a twin, stamped now
        pa.table(
            {
                "stream_id": [f"acct-{e['stream']}" for e in batches[1]],
                "category": ["acct"] * 3,
                "event_type": [e["type"] for e in batches[1]],
                "data": [e["text"] for e in batches[1]],
                "metadata": ["{}"] * 3,
            }
        )
    )
    store.append("acct-acct-2", [esa.NewEvent("C", {"f1": 7.5, "f2": 4})], category="acct")
    assert view.refresh().mode == "incremental"
    stored = {r["key"]: r for r in view.state().to_pylist()}
    json_only = {r["key"]: r for r in plain(PROJECTION.state(Session(store, typed=False)))}
    typed = {r["key"]: r for r in plain(PROJECTION.state(Session(store)))}
    assert typed == json_only
    assert {k: {f: r[f] for f in FIELDS} for k, r in stored.items()} == {
        k: {f: r[f] for f in FIELDS} for k, r in json_only.items()
    }


def test_only_top_level_data_fields_of_one_category_read_from_twins() -> None:
    from esanalytics.projections import const, meta

    def columns(category: str | None = "acct", **reducers: Any) -> Any:
        return Projection("p", reducers, category=category)._typed_columns()

    assert columns(a=Last(data("amount", "BIGINT"), on=["A"]), b=Count(on=["A"])) == (
        ("esa_0", "amount", "BIGINT"),
    )
    assert columns(a=Last(const("data"), on=["A"]), b=Max("version", on=["A"])) == ()
    assert columns(None, a=Last(data("amount"), on=["A"])) is None  # no category
    assert columns(a=Last(data("address.city"), on=["A"])) is None  # nested
    assert columns(a=Last(meta("actor"), on=["A"])) is None  # metadata
    assert columns(a=Last("data->>'$.amount'", on=["A"])) is None  # the JSON by hand
    assert columns(a=Max("schema_version", on=["A"])) is None  # a column twins have not


def test_a_typed_session_keeps_its_answer_when_compaction_replaces_its_twins(
    tmp_path: Path,
) -> None:
    """The session's typed views name twins that a compaction then retires and a vacuum
    deletes: the next question points them at the new twins, at the same position."""
    from datetime import timedelta as span

    batches = [
        [
            {"stream": f"acct-{i % 3}", "category": "acct", "type": TYPES[i % 3],
             "text": f'{{"f0": {i}, "f1": {i}.5, "f2": {i % 4}}}', "gap": 1, "back": 0}
            for i in range(n)
        ]
        for n in (8, 5)
    ]  # fmt: skip
    lake = tmp_path / "lake"
    events = build(lake, batches, compacted=1)  # one month: a twinned file and a plain one
    store = esa.open(lake)
    session = Session(store, threads=1)
    before = plain(PROJECTION.state(session))
    typed_before = plain(session.sql("SELECT * FROM events_acct ORDER BY global_position"))
    store.append("acct-acct-1", [esa.NewEvent("A", {"f0": 1})], category="acct")
    store.compact()
    store.vacuum(older_than=span(0))
    assert all(e.typed is not None for e in store.files())
    assert plain(PROJECTION.state(session)) == before  # still at the session's position
    assert state_rows(PROJECTION.state(session)) == reference(events)
    assert plain(session.sql("SELECT * FROM events_acct ORDER BY global_position")) == (
        typed_before
    )
