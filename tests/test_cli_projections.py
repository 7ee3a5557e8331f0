"""Issue 12 §4: esa state/history/diff/since answer a user's own projection (a Python file, a
module, a .sql file) as they answer the shipped ones, and the help says how."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

from esanalytics.catalog import PROJECTIONS
from tests.conftest import run_esa

DEPOSITS = textwrap.dedent(
    """
    from esanalytics.projections import Count, Projection, Sum, data

    deposits = Projection(
        "deposits",
        {
            "deposited": Sum(data("amount", "DECIMAL(18,2)"), on={"MoneyDeposited": 1}),
            "count": Count(on=["MoneyDeposited"]),
        },
        category="account",
    )
    """
)
SQL = """
SELECT stream_id AS key, count(*) AS events_seen, max(global_position) AS last_position
FROM events WHERE category = 'order' GROUP BY stream_id;
"""


def rows(*args: str) -> list[dict[str, object]]:
    done = run_esa(*args, "--format", "json", check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_a_python_file_a_module_and_a_sql_file(sample_lake: Path, tmp_path: Path) -> None:
    lake = str(sample_lake)
    source = tmp_path / "my_projections.py"
    source.write_text(DEPOSITS)
    by_file = rows("state", lake, str(source), "--key", "account-3")
    by_name = rows("state", lake, f"{source}:deposits", "--key", "account-3")
    oracle = rows(
        "sql", lake,
        "SELECT count(*) AS n, sum(CAST(data->>'$.amount' AS DECIMAL(18,2))) AS s FROM events "
        "WHERE stream_id = 'account-3' AND event_type = 'MoneyDeposited'",
    )[0]  # fmt: skip
    assert by_file == by_name
    assert by_file[0]["count"] == oracle["n"] > 0
    assert float(str(by_file[0]["deposited"])) == float(str(oracle["s"]))
    # module:attr, importable from the folder esa runs in
    done = run_esa_in(tmp_path, "state", lake, "my_projections:deposits", "--key", "account-3")
    assert json.loads(done.splitlines()[0]) == by_file[0]
    history = rows("history", lake, str(source), "--key", "account-3")
    events = rows("read", lake, "account-3")
    assert len(history) == len(events)  # a row per event of the stream
    assert history[-1]["valid_to"] is None
    assert history[-1]["deposited"] == by_file[0]["deposited"]
    diff = rows("diff", lake, str(source), "2024-03-01", "2024-09-01")
    assert diff
    assert {"deposited_before", "deposited_after"} <= set(diff[0])
    since = rows("since", lake, str(source), "29000")
    assert since
    assert all(r["last_position"] > 29000 for r in since)

    query = tmp_path / "order_events.sql"
    query.write_text(SQL)
    state = rows("state", lake, str(query))
    counted = rows(
        "sql", lake, "SELECT count(DISTINCT stream_id) AS n FROM events WHERE category = 'order'"
    )[0]
    assert len(state) == counted["n"] > 0
    changed = rows("since", lake, str(query), "29000")
    assert changed
    assert {"events_seen_before", "events_seen_after"} <= set(changed[0])
    # and as a table of esa sql
    table = rows("sql", lake, "SELECT count(*) AS n FROM order_events", "--projection", str(query))
    assert table[0]["n"] == counted["n"]


def run_esa_in(folder: Path, *args: str) -> str:
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", *args, "--format", "json"],
        capture_output=True,
        text=True,
        cwd=folder,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_bad_projection_specs_are_refused_with_a_hint(sample_lake: Path, tmp_path: Path) -> None:
    lake = str(sample_lake)
    two = tmp_path / "two.py"
    two.write_text(DEPOSITS + "\nagain = deposits\n")
    broken = tmp_path / "broken.py"
    broken.write_text("def (:\n")
    query = tmp_path / "nokey.sql"
    query.write_text("SELECT stream_id FROM events")
    for spec, said in (
        ("nope", "account_balances"),
        (str(two), "two.py:NAME"),
        (str(broken), "SyntaxError"),
        (str(tmp_path / "missing.py"), "no Python file"),
        ("no_such_module:thing", "Cannot import"),
        (str(query), "no key column"),
    ):
        done = run_esa("state", lake, spec)
        assert done.returncode == 1, (spec, done.stderr)
        assert "Traceback" not in done.stderr
        assert said in done.stderr, (spec, done.stderr)
        assert "Hint:" in done.stderr
    sql_history = run_esa("history", lake, str(tmp_path / "nokey.sql"), "--key", "x")
    assert sql_history.returncode == 1
    assert "Hint:" in sql_history.stderr


def test_help_describes_positionals_and_lists_the_projections() -> None:
    state = run_esa("state", "--help", check=True).stdout
    for name in PROJECTIONS:
        assert name in state
    assert ".sql" in state
    assert ".py" in state
    for verb in ("state", "history", "diff", "since", "sql", "read", "append", "report", "chart"):
        text = run_esa(verb, "--help", check=True).stdout
        lines = text.split("positional arguments:")[1].split("options:")[0].splitlines()
        for i, line in enumerate(lines):
            if line.startswith("  ") and not line.startswith("   "):  # an argument's own line
                described = len(line.strip().split(maxsplit=1)) > 1 or (
                    i + 1 < len(lines) and lines[i + 1].startswith("      ")
                )
                assert described, (verb, line)
    since = run_esa("since", "--help", check=True).stdout
    assert "--position" not in since  # one way to give the position: the positional
    summary = run_esa("--help", check=True).stdout
    report_line = next(x for x in summary.splitlines() if x.strip().startswith("report"))
    assert "PDF" in report_line
    report = " ".join(run_esa("report", "--help", check=True).stdout.split())
    report = re.sub(r"- (?=\w)", "-", report)  # argparse wraps lines after a hyphen
    assert "alice-trail.csv and alice-exceptions.csv" in report


def test_report_extracts_say_why_they_are_two_files(sample_lake: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "alice.csv"
    done = run_esa(
        "report", str(sample_lake), "--actor", "alice", "--format", "csv", "--output", str(target)
    )
    assert done.returncode in (0, 1), done.stderr  # 1 only when integrity fails (it does not)
    assert "two tables" in done.stderr
    written = json.loads(done.stdout)["written"]
    assert written[:2] == [
        str(tmp_path / "out" / "alice-trail.csv"),
        str(tmp_path / "out" / "alice-exceptions.csv"),
    ]
    assert all(Path(w).exists() for w in written)
