"""The esa command, run as a user runs it (a real process, real lake)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import esanalytics as esa
from tests.conftest import run_esa


@pytest.fixture(scope="module")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli") / "sample"


def test_demo_builds_the_lake_once_and_answers_a_point_in_time_question(demo_lake: Path) -> None:
    first = run_esa(
        "demo", "--lake", str(demo_lake), "--events", "5000", "--stream", "account-3", check=True
    )
    assert "events      5,000" in first.stdout
    assert "point in time: account-3" in first.stdout
    assert "built" in first.stderr
    store = esa.open(demo_lake)
    assert store.head == 5000
    # The answer printed is the fold of the stream read at that time.
    line = next(x for x in first.stdout.splitlines() if x.startswith("as recorded at"))
    cut = line.split()[3].rstrip(":")
    assert f"version {len(store.read_stream('account-3', as_of=cut))}," in line
    again = run_esa(
        "demo", "--lake", str(demo_lake), "--events", "5000", "--stream", "account-3", check=True
    )
    assert "built" not in again.stderr


def test_demo_gives_a_sample_lake_built_before_typed_twins_its_twins(tmp_path: Path) -> None:
    from esanalytics.sample import generate

    old = esa.open(tmp_path / "sample", create=True)
    old.ingest(generate(events=3_000, seed=1))  # parts under 10,000 events: no twins
    head = old.head
    old.close()
    assert all(entry.typed is None for entry in esa.open(tmp_path / "sample").files())
    out = run_esa("demo", "--lake", str(tmp_path / "sample"), "--stream", "account-3", check=True)
    assert "typed twins" in out.stdout
    store = esa.open(tmp_path / "sample")
    assert store.head == head
    assert all(entry.typed is not None for entry in store.files())
    accounts = store.read_all().to_arrow()["category"].to_pylist().count("account")
    query = "SELECT count(*) AS n FROM events_account"
    counted = run_esa("sql", str(tmp_path / "sample"), query, "--format", "json", check=True)
    assert json.loads(counted.stdout.splitlines()[0])["n"] == accounts > 0


def test_history_changes_of_gives_one_row_per_change(sample_lake: Path) -> None:
    from esanalytics.catalog import order_status
    from esanalytics.engine import Session

    session = Session(esa.open(sample_lake))
    # The order with the most events, so its statuses change more than once.
    key = session.sql(
        "SELECT stream_id FROM events WHERE category = 'order' GROUP BY ALL "
        "ORDER BY count(*) DESC, stream_id LIMIT 1"
    ).fetchall()[0][0]
    out = run_esa(
        "history", str(sample_lake), "order_status", "--key", key, "--changes-of", "status",
        "--format", "json", check=True,
    )  # fmt: skip
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    # Independently: the per-event history, with runs of one status merged by hand.
    events = order_status.history(session, key=key).df()["status"].tolist()
    merged = [s for i, s in enumerate(events) if i == 0 or events[i - 1] != s]
    assert [r["status"] for r in rows] == merged
    assert len(merged) > 1


def test_info_and_read(demo_lake: Path) -> None:
    if not demo_lake.exists():
        run_esa("generate", str(demo_lake), "--events", "5000", check=True)
    info = json.loads(run_esa("info", str(demo_lake), "--format", "json", check=True).stdout)
    assert info["events"] == esa.open(demo_lake).head
    rows = [
        json.loads(x)
        for x in run_esa(
            "read", str(demo_lake), "account-3", "--format", "json", check=True
        ).stdout.splitlines()
    ]
    assert [r["version"] for r in rows] == list(range(1, len(rows) + 1))
    csv = run_esa(
        "read",
        str(demo_lake),
        "account-3",
        "--format",
        "csv",
        "--columns",
        "version,event_type",
        check=True,
    ).stdout
    assert csv.splitlines()[0] == '"version","event_type"'


def test_append_and_errors(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    missing = run_esa("append", lake, "account-1", "AccountOpened")
    assert missing.returncode == 1
    assert "There is no lake" in missing.stderr
    assert "Hint:" in missing.stderr
    made = json.loads(
        run_esa(
            "append",
            lake,
            "account-1",
            "AccountOpened",
            "--create",
            "--data",
            '{"owner": "Ada"}',
            check=True,
        ).stdout
    )
    assert (made["position"], made["version"]) == (1, 1)
    conflict = run_esa(
        "append",
        lake,
        "account-1",
        "MoneyDeposited",
        "--expected-version",
        "no_stream",
    )
    assert conflict.returncode == 1
    assert "is at version 1" in conflict.stderr
    bad_json = run_esa("append", lake, "account-1", "MoneyDeposited", "--data", "{oops")
    assert "not valid JSON" in bad_json.stderr
    naive = run_esa("read", lake, "account-1", "--as-of", "2024-01-01T10:00")
    assert naive.returncode == 1
    assert "no time zone" in naive.stderr
    assert esa.open(lake).head == 1
    generate_over = run_esa("generate", lake)
    assert generate_over.returncode == 1
    assert "not empty" in generate_over.stderr


def test_chart_writes_svg_png_and_offline_html(sample_lake: Path, tmp_path: Path) -> None:
    svg = tmp_path / "a3.svg"
    run_esa(
        "chart",
        str(sample_lake),
        "evolution",
        "--key",
        "account-3",
        "--output",
        str(svg),
        check=True,
    )
    assert svg.read_text().startswith("<svg")
    assert "balance over system time" in svg.read_text()
    png = tmp_path / "pop.png"
    run_esa(
        "chart",
        str(sample_lake),
        "population",
        "--every",
        "month",
        "--output",
        str(png),
        check=True,
    )
    assert png.read_bytes()[:4] == b"\x89PNG"
    page = tmp_path / "heat.html"
    run_esa(
        "chart",
        str(sample_lake),
        "heatmap",
        "--as-of",
        "2024-06-01",
        "--output",
        str(page),
        check=True,
    )
    text = page.read_text()
    assert "vegaEmbed" in text
    assert 'src="http' not in text
    from esanalytics.engine import Session

    drawn = sum(int(n) for n in re.findall(r'"events": ?(\d+)', text))
    cut = Session(esa.open(sample_lake), as_of="2024-06-01").sql("SELECT count(*) FROM events")
    assert drawn == cut.fetchall()[0][0] > 0  # the chart counts only what was recorded by then
    missing = run_esa("chart", str(sample_lake), "timeline", "--output", str(tmp_path / "t.svg"))
    assert missing.returncode == 1
    assert "needs --key" in missing.stderr
    assert "Hint:" in missing.stderr
    assert not (tmp_path / "t.svg").exists()


def test_materialize_then_state_answers_the_same_from_checkpoints(
    sample_lake: Path, tmp_path: Path
) -> None:
    import shutil

    lake = tmp_path / "lake"
    shutil.copytree(sample_lake, lake)
    questions = [["--as-of", "2024-09-01"], ["--position", "12345"], []]
    from_log = [
        run_esa("state", str(lake), "account_balances", *q, "--format", "csv", check=True).stdout
        for q in questions
    ]
    diff = ["diff", str(lake), "account_balances", "2024-06-01", "2024-09-01", "--format", "csv"]
    diff_from_log = run_esa(*diff, check=True).stdout
    done = run_esa("materialize", str(lake), "account_balances", "--checkpoint-every", "5000")
    assert done.returncode == 0, done.stderr
    refresh = json.loads(done.stdout)
    assert refresh["mode"] == "rebuild"
    assert refresh["checkpoints"] == 30_000 // 5_000
    answers = [
        run_esa("state", str(lake), "account_balances", *q, "--format", "csv", check=True)
        for q in questions
    ]
    assert all("materialized projection" in a.stderr for a in answers)
    assert [a.stdout for a in answers] == from_log
    diffed = run_esa(*diff, check=True)
    assert "materialized projection" in diffed.stderr
    assert diffed.stdout == diff_from_log
    assert len(diff_from_log.splitlines()) > 10
    valid = run_esa("state", str(lake), "account_balances", "--valid-at", "2024-09-01", check=True)
    assert "materialized" not in valid.stderr  # valid time is answered from the log
    assert len(from_log[0].splitlines()) > 10
