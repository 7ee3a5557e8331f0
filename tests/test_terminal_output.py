"""Terminal tables a person can read: wide results fitted to the terminal's width, long ones
cut to a screen with a count and how to see the rest, read back from a real terminal (tmux)
the way a person sees them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from esanalytics._terminal import render
from tests.conftest import run_esa


def _longest_stream(lake: Path) -> str:
    import esanalytics as esa

    streams = esa.open(lake).streams().sort_by([("version", "descending")])
    return str(streams["stream_id"][0])


def _screen(command: list[str], *, width: int = 80, height: int = 40) -> list[str]:
    """What a ``width`` x ``height`` terminal shows after ``command`` ran in it (lines a
    terminal wrapped joined back, so a too-wide line shows as one)."""
    socket = f"esa-test-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket]
    shell = " ".join(["env", "-u", "COLUMNS", "-u", "LINES", *command]) + "; echo ESA-DONE-$?"
    subprocess.run(
        [*tmux, "new-session", "-d", "-x", str(width), "-y", str(height), "sh"], check=True
    )
    try:
        subprocess.run([*tmux, "send-keys", "clear; " + shell, "Enter"], check=True)
        deadline = time.monotonic() + 120
        while True:
            shown = subprocess.run(
                [*tmux, "capture-pane", "-p", "-J"], capture_output=True, text=True, check=True
            ).stdout
            if "ESA-DONE-" in shown.replace("echo ESA-DONE-", ""):
                break
            assert time.monotonic() < deadline, shown
            time.sleep(0.2)
    finally:
        subprocess.run([*tmux, "kill-server"], check=False)
    lines = shown.splitlines()
    done = next(i for i, x in enumerate(lines) if x.startswith("ESA-DONE-"))
    assert lines[done] == "ESA-DONE-0", shown
    return lines[:done]  # `clear` ran first: the screen holds the command's output


needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")


@needs_tmux
@pytest.mark.parametrize(
    ("verb", "header"),
    [
        (["history", "account_balances", "--trail", "--key"], ["version", "event_type", "changes"]),
        (["since", "account_balances", "1000"], ["key", "change", "changes"]),
        (["diff", "account_balances", "2024-03-01", "2024-06-01"], ["key", "change", "changes"]),
    ],
    ids=["trail", "since", "diff"],
)
def test_a_wide_table_reads_at_80_columns(
    sample_lake: Path, verb: list[str], header: list[str]
) -> None:
    args = [*verb[:1], str(sample_lake), *verb[1:]]
    if args[-1] == "--key":
        args.append(_longest_stream(sample_lake))
    shown = _screen([sys.executable, "-m", "esanalytics.cli", *args])
    wide = [x for x in shown if len(x) > 80]
    assert not wide, "\n".join(shown)
    for name in header:
        assert name in shown[0].split(), shown[0]
    assert set(shown[1].replace(" ", "")) == {"-"}
    count = [x for x in shown if " rows shown; --limit N shows more" in x]
    assert count, "\n".join(shown)
    assert "--format csv" in "\n".join(shown)
    assert len(shown) <= 40  # all of it on one screen


@needs_tmux
def test_a_short_table_shows_every_row_and_says_how_many(sample_lake: Path) -> None:
    key = _longest_stream(sample_lake)
    esa_cli = [sys.executable, "-m", "esanalytics.cli"]
    shown = _screen(
        [*esa_cli, "state", str(sample_lake), "account_balances", "--key", key], width=100
    )
    assert all(len(x) <= 100 for x in shown)
    assert shown[0].split()[0] == "key"
    assert shown[2].split()[0] == key
    assert "1 row." in shown


def test_limit_caps_every_format_and_csv_keeps_every_row_by_default(sample_lake: Path) -> None:
    key = _longest_stream(sample_lake)
    base = ["history", str(sample_lake), "account_balances", "--trail", "--key", key]
    every = run_esa(*base, "--format", "csv", check=True).stdout.splitlines()
    import esanalytics as esa

    assert len(every) == 1 + len(esa.open(sample_lake).read_stream(key))
    three = run_esa(*base, "--format", "json", "--limit", "3", check=True).stdout.splitlines()
    assert [json.loads(x)["version"] for x in three] == [1, 2, 3]
    table = run_esa(*base, "--limit", "5", check=True).stdout.splitlines()
    assert len([x for x in table[2:] if x[:1] == " " and x.split()[0].isdigit()]) == 5
    assert f"5 of {len(every) - 1:,} rows shown" in " ".join(table)
    everything = run_esa(*base, "--limit", "0", check=True).stdout
    assert f"{len(every) - 1:,} rows." in everything


@pytest.mark.parametrize("width", [40, 80, 140])
def test_render_never_passes_the_width(width: int) -> None:
    rows = 30
    table = pa.table(
        {
            "global_position": range(rows),
            "version": range(1, rows + 1),
            "event_type": ["OverdraftLimitChanged"] * rows,
            "recorded_at": pa.array([0] * rows, pa.timestamp("us", "UTC")),
            "actor": ["ünïcødé-名前"] * rows,
            "reason": [None] * rows,
            "data": ['{"amount": 12.5, "note": "a\nlong\tline"}' * 5] * rows,
            "balance_before": [1.5] * rows,
            "balance_after": [2.5] * rows,
            "status_before": ["open"] * rows,
            "status_after": ["open"] * rows,
        }
    )
    from rich.cells import cell_len

    lines = "\n".join(render(table, width=width, limit=10)).splitlines()
    assert all(cell_len(x) <= width for x in lines), lines
    assert lines[0].split()[0] in ("version", "global_position", "event_type")
    assert "changes" in lines[0] or width < 60
    assert any("10 of 30 rows shown" in x for x in lines) or width < 60
    if width >= 80:
        assert "balance 2.5 (was" in lines[2]  # the new value first: it survives a cut
        assert "status" not in lines[2]  # unchanged fields are left out
    notes = " ".join(lines)
    assert "reason" in notes  # an empty column is named as not shown


def test_render_of_nothing_says_zero_rows() -> None:
    lines = render(pa.table({"key": pa.array([], pa.string())}), width=80, limit=10)
    assert lines[-1] == "0 rows."
