"""Issue 12 §2: every error the esa command can meet ends with a Hint in the CLI's own words,
exits 1, and never shows a traceback (real processes, real lakes, real files)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

import esanalytics as esa
from tests.conftest import run_esa


def refused(*args: str) -> str:
    """Run esa, assert it failed cleanly with a hint; return its stderr."""
    done = run_esa(*args)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "error:" in done.stderr
    assert "Hint:" in done.stderr, done.stderr
    return done.stderr


def test_sql_syntax_error_unknown_column_and_projection_tables(sample_lake: Path) -> None:
    lake = str(sample_lake)
    syntax = refused("sql", lake, "SELEC count(*) FROM events")
    assert "syntax error" in syntax.lower()
    column = refused("sql", lake, "SELECT amount FROM events")
    assert "amount" in column
    assert "data->>'$.amount'" in column  # how payload fields are read
    table = refused("sql", lake, "SELECT * FROM no_such_table")
    assert "account_balances" in table  # the hint names the tables there are
    # The shipped projections' tables and macros are registered, as in the %%esql magic.
    done = run_esa(
        "sql", lake, "SELECT count(*) AS n FROM account_balances", "--format", "json", check=True
    )
    assert json.loads(done.stdout)["n"] > 0
    macro = "SELECT count(*) AS n FROM order_status_as_of('2024-06-01')"
    assert json.loads(run_esa("sql", lake, macro, "--format", "json", check=True).stdout)["n"] > 0


def test_output_into_a_missing_folder_creates_it_for_every_verb(
    sample_lake: Path, tmp_path: Path
) -> None:
    lake = str(sample_lake)
    out = tmp_path / "new" / "deeper"
    run_esa("sql", lake, "SELECT 1 AS one", "--format", "csv", "--output", str(out / "a.csv"), check=True)  # fmt: skip
    assert (out / "a.csv").read_text().splitlines() == ['"one"', "1"]
    run_esa("sql", lake, "SELECT 1 AS one", "--format", "parquet", "--output", str(out / "a.parquet"), check=True)  # fmt: skip
    assert (out / "a.parquet").exists()
    run_esa("state", lake, "order_status", "--format", "json", "--output", str(out / "s.json"), check=True)  # fmt: skip
    assert (out / "s.json").read_text().count("\n") > 10
    run_esa("chart", lake, "heatmap", "--output", str(out / "c" / "h.svg"), check=True)
    assert (out / "c" / "h.svg").read_text().startswith("<svg")
    run_esa("report", lake, "--entity", "account-3", "--output", str(out / "r" / "a3.html"), check=True)  # fmt: skip
    assert (out / "r" / "a3.html").exists()
    run_esa("keygen", str(out / "k" / "key"), check=True)
    run_esa("checkpoint", lake, "--key", str(out / "k" / "key"), "--output", str(out / "cp" / "c.json"), check=True)  # fmt: skip
    assert json.loads((out / "cp" / "c.json").read_text())["position"] == 30_000


def test_unwritable_output_is_an_error_with_a_hint(sample_lake: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    stderr = refused("sql", str(sample_lake), "SELECT 1", "--output", str(blocker / "x.csv"))
    assert str(blocker) in stderr


def test_report_against_a_missing_checkpoint(sample_lake: Path, tmp_path: Path) -> None:
    stderr = refused(
        "report", str(sample_lake), "--entity", "account-3",
        "--against", str(tmp_path / "missing.json"), "--output", str(tmp_path / "r.html"),
    )  # fmt: skip
    assert "missing.json" in stderr
    assert "esa checkpoint" in stderr
    assert not (tmp_path / "r.html").exists()


def test_history_trail_without_key_says_key_is_missing(sample_lake: Path) -> None:
    stderr = refused("history", str(sample_lake), "account_balances", "--trail")
    assert "--key" in stderr
    assert "None" not in stderr


def test_history_changes_of_names_a_misspelt_field_and_refuses_it_with_trail(
    sample_lake: Path,
) -> None:
    misspelt = refused("history", str(sample_lake), "order_status", "--changes-of", "statu")
    assert "'statu'" in misspelt
    assert "--changes-of status" in misspelt
    assert "changes_of=" not in misspelt.split("Hint:")[1]
    both = refused(
        "history", str(sample_lake), "order_status", "--changes-of", "status", "--trail",
        "--key", "order-1",
    )  # fmt: skip
    assert "--trail" in both


def test_a_chart_of_an_entity_the_projection_does_not_fold_names_the_projection_that_does(
    sample_lake: Path, tmp_path: Path
) -> None:
    out = tmp_path / "chart.png"
    stderr = refused(
        "chart", str(sample_lake), "intervals", "--key", "order-1", "--output", str(out)
    )
    assert "not an entity of account_balances" in stderr
    assert "category 'order'" in stderr
    assert "--projection order_status" in stderr
    assert "later cut" not in stderr  # its events are there: no time would help
    assert not out.exists()


def test_a_column_of_events_asked_of_a_typed_view_says_to_read_it_from_events(
    sample_lake: Path,
) -> None:
    stderr = refused("sql", str(sample_lake), "SELECT count(DISTINCT event_id) FROM events_account")
    assert "event_id is a column of events" in stderr
    assert "data->>'$.event_id'" not in stderr  # it is no payload field
    payload = refused("sql", str(sample_lake), "SELECT amount FROM events")
    assert "data->>'$.amount'" in payload


def test_hints_speak_cli_not_python(tmp_path: Path, sample_lake: Path) -> None:
    missing = refused("info", str(tmp_path / "nowhere"))
    assert "esa init" in missing
    assert "create=True" not in missing
    naive = refused("sql", str(sample_lake), "SELECT 1", "--as-of", "2024-03-01T10:00")
    assert "datetime(" not in naive
    assert "2024-03-01T10:00Z" in naive or "Z" in naive.split("Hint:")[1]
    position = refused("since", str(sample_lake), "order_status", "-5")
    assert "store.head" not in position
    assert "position=" not in position.split("Hint:")[1]
    bad_data = refused("append", str(sample_lake), "account-1", "X", "--data", "[1]")
    assert "{'value'" not in bad_data
    expected = refused("append", str(sample_lake), "account-1", "X", "--expected-version", "-3")
    assert "NO_STREAM" not in expected
    assert "--expected-version" in expected
    category = refused("append", str(sample_lake), "a/../x-1", "X")
    assert "category='" not in category
    assert "account-42" in category


def test_init_makes_an_empty_lake(tmp_path: Path) -> None:
    lake = tmp_path / "my-lake"
    done = run_esa("init", str(lake), check=True)
    assert str(lake) in done.stdout + done.stderr
    assert esa.open(lake).head == 0
    info = json.loads(run_esa("info", str(lake), "--format", "json", check=True).stdout)
    assert info["events"] == 0
    again = run_esa("init", str(lake), check=True)  # an existing lake is left as it is
    assert "already" in again.stdout + again.stderr
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert "folder of its own" in refused("init", str(tmp_path / "other"))


def test_no_traceback_on_a_non_lake_an_empty_folder_or_damaged_files(
    sample_lake: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("hello")
    for folder in (empty, other):
        for verb in (["info"], ["verify"], ["compact"], ["sql", "SELECT 1"]):
            stderr = refused(verb[0], str(folder), *verb[1:])
            assert "There is no lake" in stderr
    marker = tmp_path / "marker"
    shutil.copytree(sample_lake, marker)
    (marker / "_esa" / "lake.json").write_text("{bad")
    assert "lake.json" in refused("info", str(marker))
    damaged = tmp_path / "damaged"
    shutil.copytree(sample_lake, damaged)
    victim = sorted((damaged / "events").rglob("*.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    for verb in (
        ["sql", "SELECT count(*) FROM events"],
        ["report", "--period", "2024-01-01", "2026-01-01", "--output", str(tmp_path / "r.html")],
        ["chart", "heatmap", "--output", str(tmp_path / "h.svg")],
    ):
        stderr = refused(verb[0], str(damaged), *verb[1:])
        assert "esa verify" in stderr


def test_ingest_accepts_a_pandas_dataframe(tmp_path: Path) -> None:
    store = esa.open(tmp_path / "lake", create=True)
    frame = pd.DataFrame(
        {
            "stream_id": ["account-1", "account-1", "account-2"],
            "event_type": ["AccountOpened", "MoneyDeposited", "AccountOpened"],
            "data": [{"owner": "Ada"}, {"amount": 5.5}, '{"owner": "Bo"}'],
            "metadata": [{"actor": "alice"}, {}, "{}"],
            "occurred_at": pd.to_datetime(
                ["2024-03-01T09:00Z", "2024-03-02T09:00Z", "2024-03-03T09:00Z"], utc=True
            ),
        },
        index=[10, 11, 12],
    )
    commit = store.ingest(frame)
    assert commit.last_position == 3
    events = store.read_stream("account-1").to_list()
    assert [e.data for e in events] == [{"owner": "Ada"}, {"amount": 5.5}]
    assert events[0].metadata["actor"] == "alice"
    assert store.read_stream("account-2").to_list()[0].data == {"owner": "Bo"}
    with pytest.raises(esa.ValidationError, match="stream_id"):
        store.ingest(frame.drop(columns=["data"]).rename(columns={"stream_id": "stream"}))


def test_esql_magic_explains_query_errors_too(
    sample_lake: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.run_line_magic("load_ext", "esanalytics.jupyter")
        capsys.readouterr()
        result = shell.run_cell_magic("esql", f"--lake {sample_lake}", "SELECT amount FROM events")
        said = capsys.readouterr().out
        assert result is None
        assert "data->>'$.amount'" in said
        assert "Hint:" in said
        frame = shell.run_cell_magic(
            "esql", f"--lake {sample_lake}", "SELECT count(*) AS n FROM account_balances"
        )
        assert int(frame["n"][0]) > 0
    finally:
        InteractiveShell.clear_instance()


def test_more_refusals_found_by_trying_every_verb(sample_lake: Path, tmp_path: Path) -> None:
    lake = str(sample_lake)
    assert "--columns" in refused("read", lake, "account-3", "--columns", "version,nope")
    assert "query is empty" in refused("sql", lake, " ")
    assert "a folder" in refused("sql", lake, "SELECT 1", "--output", str(tmp_path))
    assert "--stream" in refused("demo", "--lake", lake, "--stream", "nope-1")
    assert "--checkpoint-every" in refused(
        "materialize", lake, "account_balances", "--checkpoint-every", "-5"
    )
    population = refused("chart", lake, "population", "--field", "balance", "--output", str(tmp_path / "p.svg"))  # fmt: skip
    assert "--field status" in population
    assert "Session" not in population
    usage = run_esa("diff", lake, "account_balances", "2024-01-01")
    assert usage.returncode == 2
    assert "Hint: `esa diff --help`" in usage.stderr


def test_demo_suggests_commands_that_run_in_this_shell(sample_lake: Path) -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[1]
    fresh = {**os.environ, "PATH": "/usr/bin:/bin"}  # a new shell: .venv/bin is not on it
    done = subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", "demo", "--lake", str(sample_lake), "--stream", "account-3"],
        capture_output=True, text=True, cwd=root, env=fresh, timeout=300, check=True,
    )  # fmt: skip
    tries = [x.strip() for x in done.stdout.split("Try:")[1].splitlines() if x.strip()]
    assert tries
    assert all(t.startswith("python3 -m uv run esa ") for t in tries), tries
    # `python3 -m uv run esa demo`, as the README runs it: .venv/bin is on this process's
    # PATH only, so the shell that typed it still needs `python3 -m uv run esa`
    venv = str(Path(sys.executable).parent)
    under_uv = {**fresh, "PATH": f"{venv}:/usr/bin:/bin", "UV_RUN_RECURSION_DEPTH": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", "demo", "--lake", str(sample_lake), "--stream", "account-3"],
        capture_output=True, text=True, cwd=root, env=under_uv, timeout=300, check=True,
    )  # fmt: skip
    tries = [x.strip() for x in done.stdout.split("Try:")[1].splitlines() if x.strip()]
    assert all(t.startswith("python3 -m uv run esa ") for t in tries), tries


def test_errors_in_a_real_terminal_wrap_at_its_width(sample_lake: Path) -> None:
    """In an 80-column terminal (a pseudo-terminal, as a shell gives), the error and its hint
    are wrapped between words; into a pipe they stay whole lines (the tests above)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 80, 0, 0))
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "", "LINES": ""}
    env.pop("COLUMNS")
    env.pop("LINES")
    done = subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", "sql", str(sample_lake), "SELECT amount FROM events"],
        stdin=follower, stdout=follower, stderr=follower, env=env, timeout=300,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    screen = re.sub(r"\x1b\[[0-9;]*m", "", b"".join(chunks).decode()).replace("\r", "")
    assert done.returncode == 1
    assert "Traceback" not in screen
    lines = screen.splitlines()
    assert max(len(line) for line in lines) <= 80
    hint = screen[screen.index("Hint:") :]
    assert "data->>'$.amount'" in hint  # never cut inside a word


def test_since_past_the_head_is_refused_not_an_empty_answer(sample_lake: Path) -> None:
    stderr = refused("since", str(sample_lake), "order_status", "99999999")
    assert "past the lake's head" in stderr
    assert "esa info" in stderr
