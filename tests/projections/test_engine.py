"""The DuckDB session: tail and files together, pruning by the plan, macros, CLI."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd

import esanalytics as esa
from esanalytics.catalog import account_balances
from esanalytics.engine import Session
from tests.conftest import run_esa


def test_events_view_equals_the_store(sample_lake: Path, tmp_path: Path) -> None:
    lake = tmp_path / "copy"
    shutil.copytree(sample_lake, lake)
    store = esa.open(lake)
    store.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": 1.5})])  # unsealed tail
    session = Session(store)
    ours = store.read_all().to_pandas()
    theirs = session.df("SELECT * EXCLUDE (month) FROM events ORDER BY global_position")
    assert len(theirs) == len(ours) == 30_001
    pd.testing.assert_frame_equal(
        theirs.reset_index(drop=True), ours.reset_index(drop=True), check_dtype=False
    )


def test_a_system_time_cut_skips_later_files(sample_lake: Path) -> None:
    session = Session(esa.open(sample_lake))
    total = len(esa.open(sample_lake).files())
    plan = session.explain("SELECT count(*) FROM events_as_of('2024-02-10T00:00:00Z')")
    scanned = re.search(r"Scanning Files: (\d+)/(\d+)", plan)
    assert scanned, plan
    read, listed = int(scanned.group(1)), int(scanned.group(2))
    assert listed == total
    months = {f.month for f in esa.open(sample_lake).files() if f.month <= "2024-02"}
    assert read == sum(1 for f in esa.open(sample_lake).files() if f.month in months) < total
    pinned = Session(esa.open(sample_lake), as_of="2024-02-10T00:00:00Z")
    assert "Scanning Files: " + str(read) in pinned.explain("SELECT count(*) FROM events")


def test_sql_macros_equal_the_python_cuts(sample_lake: Path) -> None:
    store = esa.open(sample_lake)
    session = Session(store)
    cut = "2024-03-15T12:00:00Z"
    by_macro = session.sql(f"SELECT count(*) FROM events_as_of('{cut}')").fetchall()[0][0]
    assert by_macro == len(store.read_all(as_of=cut))
    valid = session.sql(f"SELECT count(*) FROM events_valid_at('{cut}')").fetchall()[0][0]
    frame = store.read_all().to_pandas()
    assert valid == int((frame["occurred_at"] <= pd.Timestamp(cut)).sum())
    both = session.sql(
        f"SELECT count(*) FROM events_bitemporal('{cut}', '2024-03-01T00:00:00Z')"
    ).fetchall()[0][0]
    assert both == int(
        (
            (frame["recorded_at"] <= pd.Timestamp(cut))
            & (frame["occurred_at"] <= pd.Timestamp("2024-03-01T00:00:00Z"))
        ).sum()
    )
    assert session.sql("SELECT count(*) FROM events_at_position(123)").fetchall()[0][0] == 123


def test_session_survives_compaction_under_it(lake: Path) -> None:
    store = esa.open(lake, create=True)
    for i in range(30):
        store.append(f"account-{i % 3}", [esa.NewEvent("MoneyDeposited", {"amount": i})])
        store.flush()
    session = Session(esa.open(lake))
    store.compact()
    store.vacuum(older_than=__import__("datetime").timedelta(0))
    assert session.sql("SELECT count(*) FROM events").fetchall()[0][0] == 30


def test_balances_match_the_write_side(sample_lake: Path) -> None:
    from esanalytics.domain import CommandHandler, accounts

    store = esa.open(sample_lake)
    bank = CommandHandler(store, accounts.decider)
    state = account_balances.state(Session(store)).df().set_index("key")
    for key in list(state.index)[:40]:
        folded = bank.state(key)
        assert float(state.loc[key, "balance"]) == folded.balance
        assert state.loc[key, "status"] == folded.status


def test_cli_temporal_commands(sample_lake: Path, tmp_path: Path) -> None:
    lake = str(sample_lake)
    count = run_esa(
        "sql", lake, "SELECT count(*) AS n FROM events", "--as-of", "2024-03-01", "--format", "json"
    )
    assert count.returncode == 0, count.stderr
    assert json.loads(count.stdout)["n"] == len(esa.open(sample_lake).read_all(as_of="2024-03-01"))
    state = run_esa("state", lake, "account_balances", "--key", "account-3", "--format", "json")
    assert json.loads(state.stdout)["key"] == "account-3"
    trail = run_esa(
        "history", lake, "account_balances", "--key", "account-3", "--trail", "--format", "json"
    )
    rows = [json.loads(x) for x in trail.stdout.splitlines()]
    assert [r["version"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["actor"] for r in rows)
    diff = run_esa("diff", lake, "account_balances", "2024-02-01", "2024-03-01", "--format", "csv")
    assert diff.stdout.startswith('"key","change"')
    since = run_esa("since", lake, "account_balances", "29990", "--format", "json")
    assert since.returncode == 0
    out = tmp_path / "state.parquet"
    saved = run_esa("state", lake, "order_status", "--format", "parquet", "--output", str(out))
    assert json.loads(saved.stdout)["rows"] > 0
    assert out.stat().st_size > 0
    bad = run_esa("state", lake, "nope")
    assert bad.returncode == 1
    assert "account_balances" in bad.stderr
    naive = run_esa("sql", lake, "SELECT 1", "--as-of", "2024-01-01 10:00")
    assert "no time zone" in naive.stderr


def test_sql_upcasting_equals_the_python_codec(sample_lake: Path) -> None:
    from dataclasses import asdict

    from esanalytics.domain import accounts

    store = esa.open(sample_lake)
    session = Session(store)
    view = session.register_codec(accounts.codec)
    rows = session.sql(
        f"SELECT global_position, event_type, schema_version, data FROM {view} "
        "WHERE category = 'account' ORDER BY global_position LIMIT 3000"
    ).fetchall()
    originals = {e.global_position: e for e in store.read_all(position=rows[-1][0])}
    lifted = 0
    for position, event_type, schema_version, text in rows:
        record = originals[position]
        by_python = asdict(accounts.codec.decode_record(record))
        by_sql = json.loads(text)
        added = set(by_python) - set(record.data) - {"currency"}  # what upcasting added
        for key in set(record.data) | added:
            assert by_sql[key] == by_python[key], (position, key)
        assert schema_version == accounts.codec.schema_versions.get(event_type, 1)
        lifted += bool(added)
    assert lifted > 1_000
