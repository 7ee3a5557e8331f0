"""The Spark engine answers as DuckDB does: for random logs (files and an unsealed tail) and
random cuts on both axes, every projection form, the SQL macros and the registered
projections give the same rows on Spark ``local[2]`` as in DuckDB; so do the shipped
projections on the sample lake, DuckDB reading its typed twins and Spark the JSON."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics import spark as esa_spark
from esanalytics.catalog import PROJECTIONS, account_balances
from esanalytics.cli import main
from esanalytics.engine import Session
from esanalytics.projections import First, Last, Projection, data
from esanalytics.sample import SampleSpec, generate
from tests.projections.test_reference_fold import BASE, PROJECTION, SQL, build, event, reference

FIELDS = ("name", "first_name", "balance", "deposits", "largest", "smallest")


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    """One local Spark for these tests: two cores, two shuffle partitions, no UI, UTC."""
    session = esa_spark.spark_session("local[2]", **{"spark.sql.shuffle.partitions": "2"})
    session.sparkContext.setLogLevel("FATAL")
    yield session
    session.stop()


def rows(table: Any) -> list[dict[str, Any]]:
    """Rows in a stable order, for comparing answers whatever order an engine gives."""
    return sorted(table.to_pylist(), key=repr)


def keyed(table: Any, fields: tuple[str, ...] = FIELDS) -> dict[str, tuple[Any, ...]]:
    return {r["key"]: tuple(r[f] for f in fields) for r in table.to_pylist()}


def _zoned(moment: Any, hours: int) -> str:
    """The instant as text in another zone: a cut is an instant, whatever its offset."""
    return moment.astimezone(timezone(timedelta(hours=hours))).isoformat()


tail_event = st.tuples(
    st.integers(0, 3), st.sampled_from(["Renamed", "Deposited", "Withdrawn"]), st.integers(1, 99)
)
cut_minutes = st.one_of(st.none(), st.integers(0, 25 * 600))


@settings(max_examples=5, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(event, min_size=1, max_size=25), tail=st.lists(tail_event, max_size=3),
       sys_cut=cut_minutes, valid_cut=cut_minutes, pos_cut=st.one_of(st.none(), st.integers(0, 30)),
       offset=st.integers(-11, 13))  # fmt: skip
def test_state_and_macros_at_any_cut_equal_duckdb(
    spark: Any, tmp_path: Path, raw: list, tail: list, sys_cut: int | None,  # type: ignore[type-arg]
    valid_cut: int | None, pos_cut: int | None, offset: int,
) -> None:  # fmt: skip
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    events = build(lake, raw)
    store = esa.open(lake)
    for stream, kind, amount in tail:  # committed, not sealed: only in the commit log
        payload = {"name": f"t{amount}"} if kind == "Renamed" else {"amount": amount}
        store.append(f"acct-{stream}", [esa.NewEvent(kind, payload, occurred_at=BASE)])
    assert store.snapshot().tail.num_rows == len(tail)
    cut: dict[str, Any] = {}
    if sys_cut is not None:
        cut["as_of"] = BASE + timedelta(minutes=sys_cut)
    if valid_cut is not None:
        cut["valid_at"] = BASE + timedelta(minutes=valid_cut)
    if pos_cut is not None:
        cut["position"] = pos_cut
    duck = Session(store, threads=1)
    on_spark = esa_spark.Session(store, spark=spark)
    got = on_spark.arrow(on_spark.state(PROJECTION, **cut))
    assert rows(got) == rows(PROJECTION.state(duck, **cut).to_arrow_table())
    if not tail:  # and both equal the plain fold
        assert keyed(got) == reference(events, **cut)
    assert rows(on_spark.arrow(on_spark.state(SQL, **cut))) == rows(
        SQL.state(duck, **cut).to_arrow_table()
    )
    if "position" not in cut:  # the cut made by the session itself
        pinned = esa_spark.Session(store, spark=spark, **cut)
        assert rows(pinned.arrow(pinned.state(PROJECTION))) == rows(got)
    # The SQL macros, with the time written in another zone, and a projection's own.
    moment = _zoned(cut.get("as_of", BASE + timedelta(minutes=3000)), offset)
    valid = _zoned(cut.get("valid_at", BASE + timedelta(minutes=2000)), -offset)
    query = f"""
        SELECT 'as_of' AS m, global_position, recorded_at FROM events_as_of('{moment}')
        UNION ALL SELECT 'valid_at', global_position, occurred_at FROM events_valid_at('{valid}')
        UNION ALL SELECT 'bitemporal', global_position, recorded_at
            FROM events_bitemporal('{moment}', '{valid}')
        UNION ALL SELECT 'position', global_position, recorded_at
            FROM events_at_position({pos_cut or 7})
    """
    assert rows(on_spark.arrow(query)) == rows(duck.sql(query).to_arrow_table())
    PROJECTION.register(duck)
    on_spark.register(PROJECTION)
    query = (
        f"SELECT 'now' AS m, * FROM ledger UNION ALL SELECT 'as_of', * FROM ledger_as_of('{moment}') "
        f"UNION ALL SELECT 'valid_at', * FROM ledger_valid_at('{valid}') "
        f"UNION ALL SELECT 'position', * FROM ledger_at_position({pos_cut or 7})"
    )
    assert rows(on_spark.arrow(query)) == rows(duck.sql(query).to_arrow_table())


@settings(max_examples=3, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.lists(event, min_size=1, max_size=25), t1=st.integers(0, 15 * 600),
       t2=st.integers(0, 15 * 600), since=st.integers(0, 25))  # fmt: skip
def test_history_diff_since_equal_duckdb(
    spark: Any,
    tmp_path: Path,
    raw: list,
    t1: int,
    t2: int,
    since: int,  # type: ignore[type-arg]
) -> None:
    lake = tmp_path / f"lake{len(list(tmp_path.iterdir()))}"
    build(lake, raw)
    store = esa.open(lake)
    duck, on_spark = Session(store, threads=1), esa_spark.Session(store, spark=spark)
    for axis in ("system", "valid"):  # valid_from/valid_to: the same instants on both engines
        assert rows(on_spark.arrow(on_spark.history(PROJECTION, axis=axis))) == rows(
            PROJECTION.history(duck, axis=axis).to_arrow_table()  # type: ignore[arg-type]
        )
    assert rows(on_spark.arrow(on_spark.history(PROJECTION, changes_of=["name"]))) == rows(
        PROJECTION.history(duck, changes_of=["name"]).to_arrow_table()
    )
    before, after = {"as_of": BASE + timedelta(minutes=t1)}, {"as_of": BASE + timedelta(minutes=t2)}
    assert rows(on_spark.arrow(on_spark.diff(PROJECTION, before, after))) == rows(
        PROJECTION.diff(duck, before, after).to_arrow_table()
    )
    assert rows(on_spark.arrow(on_spark.since(PROJECTION, since))) == rows(
        PROJECTION.since(duck, since).to_arrow_table()
    )


@pytest.mark.parametrize(
    "cut",
    [{}, {"as_of": "2024-03-01"}, {"valid_at": "2024-02-15T12:00:00-05:00"},
     {"as_of": "2024-04-01", "valid_at": "2024-02-01"}, {"position": 12_345}],
)  # fmt: skip
def test_the_sample_lakes_projections_equal_duckdbs(
    spark: Any, sample_lake: Path, cut: dict[str, Any]
) -> None:
    store = esa.open(sample_lake)
    duck, on_spark = Session(store), esa_spark.Session(store, spark=spark)  # both: twins
    assert on_spark.has_twins("account")
    as_json = esa_spark.Session(store, spark=spark, typed=False)
    for projection in PROJECTIONS.values():
        got = on_spark.arrow(on_spark.state(projection, **cut))
        assert got.num_rows > 0
        expected = rows(projection.state(duck, **cut).to_arrow_table())
        assert rows(got) == expected
        if not cut:  # and with every payload field read from the JSON
            assert rows(as_json.arrow(as_json.state(projection))) == expected


def test_twins_files_without_twins_and_the_tail_read_together(spark: Any, copy: Path) -> None:
    """A compacted lake that has taken new events since: twins, a sealed file without one
    and the unsealed tail make one typed source on Spark, as in DuckDB."""
    store = esa.open(copy)
    position = store.snapshot().position
    key = Session(store).sql("SELECT min(stream_id) FROM events WHERE category = 'account'")
    account = key.fetchall()[0][0]
    for amount in ("12.50", "7", "0.005"):
        store.append(account, [esa.NewEvent("MoneyDeposited", {"amount": amount})])
    store.append("account-new", [esa.NewEvent("AccountOpened", {"owner": "Ada", "overdraft_limit": 5})])  # fmt: skip
    duck, on_spark = Session(store), esa_spark.Session(store, spark=spark)
    assert on_spark._snapshot.tail.num_rows == 4
    assert rows(on_spark.arrow(on_spark.state(account_balances))) == rows(
        account_balances.state(duck).to_arrow_table()
    )
    assert rows(on_spark.arrow(on_spark.since(account_balances, position))) == rows(
        account_balances.since(duck, position).to_arrow_table()
    )


def test_last_and_first_pass_over_null_values_as_in_duckdb(spark: Any, tmp_path: Path) -> None:
    """An event whose value is null (or missing) sets nothing for Last and First, in the
    state and in the macros: Spark's max_by would take its null."""
    store = esa.open(tmp_path / "lake", create=True)
    store.append("account-1", [esa.NewEvent("Opened", {"owner": "Ada"}), esa.NewEvent("Renamed", {"owner": None}), esa.NewEvent("Renamed", {})])  # fmt: skip
    store.append("account-2", [esa.NewEvent("Opened", {}), esa.NewEvent("Renamed", {"owner": "Bob"})])  # fmt: skip
    owners = Projection(
        "owners",
        {
            "last": Last(data("owner"), on=["Opened", "Renamed"]),
            "first": First(data("owner"), on=["Opened", "Renamed"]),
        },
        category="account",
    )
    expected = {"account-1": ("Ada", "Ada"), "account-2": ("Bob", "Bob")}
    duck, on_spark = Session(store), esa_spark.Session(store, spark=spark)
    assert keyed(owners.state(duck).to_arrow_table(), ("last", "first")) == expected
    assert keyed(on_spark.arrow(on_spark.state(owners)), ("last", "first")) == expected
    on_spark.register(owners)
    query = "SELECT * FROM owners_at_position(5)"
    assert keyed(on_spark.arrow(query), ("last", "first")) == expected


def test_a_projections_frame_reads_again_after_a_compaction_moved_its_files(
    spark: Any, tmp_path: Path
) -> None:
    """state() gives a DataFrame planned over the files of its position; a compaction then
    renames them (to .retired): collecting it re-plans over the files that hold the same
    position now, as a query's text does, not a Java stack trace."""
    store = esa.open(tmp_path / "lake", create=True)
    table = generate(SampleSpec(events=3_000, seed=1))
    store.ingest(table.slice(0, 1_500))
    store.ingest(table.slice(1_500))
    on_spark = esa_spark.Session(store, spark=spark)
    frame = on_spark.state(account_balances)
    assert esa.open(store.path).compact()["files_in"] > 0
    expected = rows(account_balances.state(Session(store)).to_arrow_table())
    assert rows(on_spark.arrow(frame)) == expected


def test_categories_with_glob_characters_are_read_as_named(spark: Any, tmp_path: Path) -> None:
    """A category may hold [, ], { and } (its folder is category=a[1]): Spark, which reads
    each path as a glob pattern, reads those files as DuckDB does, not "Path does not exist"."""
    store = esa.open(tmp_path / "lake[1]", create=True)
    for stream in ("a[1]-1", "b{x,y}-1", "c[x]-1", "plain-1"):
        store.append(stream, [esa.NewEvent("Opened", {"owner": "Ada"})])
    store.flush()
    query = "SELECT category, count(*) AS n FROM events GROUP BY category"
    expected = rows(Session(store).sql(query).to_arrow_table())
    assert len(expected) == 4
    on_spark = esa_spark.Session(store, spark=spark)
    assert rows(on_spark.arrow(query)) == expected


def test_one_entitys_history_and_trail_equal_duckdbs(spark: Any, sample_lake: Path) -> None:
    store = esa.open(sample_lake)
    duck, on_spark = Session(store), esa_spark.Session(store, spark=spark)
    key = duck.sql("SELECT min(stream_id) FROM events WHERE category = 'account'").fetchall()[0][0]
    got = on_spark.arrow(on_spark.history(account_balances, key=key, axis="valid"))
    assert got.to_pylist() == account_balances.history(duck, key=key, axis="valid").to_arrow_table().to_pylist()  # fmt: skip
    got = on_spark.arrow(on_spark.trail(account_balances, key))
    assert got.to_pylist() == account_balances.trail(duck, key).to_arrow_table().to_pylist()


def test_esa_sql_and_state_on_spark(
    spark: Any, sample_lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = str(sample_lake)
    query = (
        "SELECT count(*) AS n, sum(balance) AS total FROM account_balances_as_of('2024-03-01') "
        "WHERE status = 'open'"
    )
    for engine in ("duckdb", "spark"):
        assert main(["sql", lake, "--format", "json", "--engine", engine, query]) == 0
    duck, on_spark = capsys.readouterr().out.strip().splitlines()
    assert duck == on_spark
    for engine in ("duckdb", "spark"):
        assert main(["state", lake, "order_status", "--as-of", "2024-02-01", "--format", "csv",
                     "--engine", engine]) == 0  # fmt: skip
    out = capsys.readouterr().out
    half = len(out) // 2
    assert out[:half] == out[half:]
    assert out.count("\n") > 2


def test_a_spark_session_runs_only_queries(spark: Any, store: esa.EventStore, tmp_path: Path) -> None:  # fmt: skip
    store.append("acct-1", [esa.NewEvent("Deposited", {"amount": 5})])
    on_spark = esa_spark.Session(store, spark=spark)
    assert on_spark.arrow("SELECT data->>'$.amount' AS a FROM events").to_pylist() == [{"a": "5"}]
    with pytest.raises(esa.ValidationError, match="Only one query"):
        on_spark.sql(f"INSERT OVERWRITE DIRECTORY '{store.path}/events' SELECT * FROM events")
    with pytest.raises(esa.ValidationError, match="Hint: the lake's tables are events"):
        on_spark.sql("SELECT nothing FROM events")
    with pytest.raises(esa.ValidationError, match="Hint: Spark reads times as ISO text"):
        on_spark.arrow("SELECT * FROM events_as_of('March')")


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        ("import sys; sys.modules['pyspark'] = None", "pip install 'esanalytics[spark]'"),
        ("import os; os.environ['PATH'] = '/nonexistent'; os.environ.pop('JAVA_HOME', None)",
         "apt-get install openjdk-17-jre-headless"),
    ],
)  # fmt: skip
def test_a_missing_extra_or_java_is_named_with_its_fix(code: str, hint: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{code}\nfrom esanalytics.spark import spark_session\nspark_session()",
        ],
        capture_output=True,
        text=True,
        env={**os.environ},
        timeout=120,
    )
    assert done.returncode != 0
    assert "SparkUnavailableError" in done.stderr
    assert hint in done.stderr.split("Hint:")[-1]


README_EXAMPLE = """
import tempfile
import esanalytics as esa
from esanalytics import spark
from esanalytics.catalog import account_balances
from esanalytics.engine import Session
from esanalytics.sample import SampleSpec, generate

store = esa.open(tempfile.mkdtemp() + "/lake", create=True)
store.ingest(generate(SampleSpec(events=5_000, seed=1)))
cut = {"as_of": "2024-06-01T00:00:00Z", "valid_at": "2024-05-01T00:00:00Z"}
on_duckdb = account_balances.state(Session(store), **cut).to_arrow_table()
on_spark = spark.Session(store, spark=spark.spark_session("local[2]"))
answer = on_spark.arrow(on_spark.state(account_balances, **cut))
print(answer.num_rows, answer.to_pylist() == on_duckdb.to_pylist())  # 9 True
"""


def test_the_readme_example_compares_the_engines(
    spark: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example proposed for the README's Spark section (it joins the running Spark)."""
    exec(compile(README_EXAMPLE, "README", "exec"), {})
    assert capsys.readouterr().out.splitlines() == ["9 True"]
