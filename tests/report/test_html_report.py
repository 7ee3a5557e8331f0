"""HTML reports: escaped, self-contained, reproducible, and honest about tampering."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import esanalytics as esa
from esanalytics.audit import Scope, collect
from esanalytics.report import render_html
from tests.conftest import run_esa

PAYLOAD = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def hostile_lake(lake: Path) -> esa.EventStore:
    store = esa.open(lake, create=True)
    store.append(f"account-{PAYLOAD}", [
        esa.NewEvent("AccountOpened", {"owner": PAYLOAD}, metadata={"actor": PAYLOAD, "reason": "=cmd|' /C calc'!A0"}),
        esa.NewEvent("MoneyDeposited", {"amount": 5}, metadata={"actor": "bob", "approved_by": "bob"}),
    ])  # fmt: skip
    return store


def test_hostile_values_are_escaped_and_nothing_loads(lake: Path) -> None:
    store = hostile_lake(lake)
    page = render_html(collect(store, Scope("entity", f"account-{PAYLOAD}")))
    assert "<script" not in page.lower()
    assert "<img" not in page  # the payload only ever appears as escaped text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no external resource
    assert "default-src 'none'" in page


def test_regenerating_gives_the_same_report_but_the_time(lake: Path) -> None:
    store = hostile_lake(lake)
    first = collect(store, Scope("actor", "bob"))
    store.append(
        "account-9", [esa.NewEvent("MoneyDeposited", {"amount": 1}, metadata={"actor": "bob"})]
    )
    again = collect(store, Scope("actor", "bob"), position=first.position)  # as its command says
    when = datetime(2025, 1, 1, tzinfo=UTC)
    assert render_html(first, generated_at=when) == render_html(again, generated_at=when)
    assert "--position" in first.command
    exceptions = first.exceptions.to_pylist()
    assert [e["kind"] for e in exceptions if e["kind"] == "self_approved"] == ["self_approved"]


def test_report_shows_tampering(copy: Path) -> None:
    store = esa.open(copy)
    stream = "account-3"
    package = collect(store, Scope("entity", stream))
    assert package.integrity_ok
    assert package.complete
    victim = next(
        f for f in sorted((copy / "events").rglob("*.parquet"))
        if stream in pq.read_table(f, columns=["stream_id"])["stream_id"].to_pylist()
    )  # fmt: skip
    table = pq.read_table(victim)
    data = table["data"].to_pylist()
    index = table["stream_id"].to_pylist().index(stream)
    data[index] = data[index].replace("}", ',"forged":true}')
    pq.write_table(table.set_column(8, "data", pa.array(data)), victim)
    tampered = collect(esa.open(copy), Scope("entity", stream))
    assert not tampered.integrity_ok
    assert "does not match its hash" in tampered.integrity_text
    assert "FAILED" in render_html(tampered)


def test_cli_report_html_and_extracts(sample_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    done = run_esa("report", str(sample_lake), "--entity", "account-3", "--output", str(out))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["events"] == len(esa.open(sample_lake).read_stream("account-3"))
    assert "account-3" in out.read_text()
    csv = run_esa(
        "report",
        str(sample_lake),
        "--period",
        "2024-02-01",
        "2024-02-08",
        "--format",
        "csv",
        "--output",
        str(tmp_path / "feb.csv"),
    )
    assert csv.returncode == 0, csv.stderr
    assert (tmp_path / "feb-trail.csv.sha256").exists()
    check = subprocess.run(
        ["sha256sum", "-c", "feb-trail.csv.sha256"], cwd=tmp_path, capture_output=True
    )
    assert check.returncode == 0
    none = run_esa("report", str(sample_lake), "--output", str(out))
    assert none.returncode == 1
    assert "exactly one scope" in none.stderr


def test_pdf_report_holds_the_same_facts(lake: Path) -> None:
    from esanalytics.report import render_pdf

    store = hostile_lake(lake)
    package = collect(store, Scope("actor", "bob"))
    when = datetime(2025, 1, 1, tzinfo=UTC)
    pdf = render_pdf(package, generated_at=when, compress=False)
    assert pdf.startswith(b"%PDF-")
    text = pdf.decode("latin-1")
    for fact in (
        "Integrity: OK",
        "Completeness: OK",
        "self_approved",
        package.digest[:20],
        "--position",
    ):
        assert fact in text, fact
    assert render_pdf(package, generated_at=when) == render_pdf(package, generated_at=when)
    page = render_pdf(collect(store, Scope("entity", f"account-{PAYLOAD}")), compress=False)
    assert b"%PDF-" in page  # hostile text is only text in a PDF; it must not break rendering


def test_reports_carry_charts_of_the_scope(sample_lake: Path) -> None:
    from esanalytics.report import render_pdf
    from esanalytics.report.charts import report_charts

    store = esa.open(sample_lake)
    package = collect(store, Scope("entity", "account-3"))
    assert package.projection == "account_balances"
    charts = report_charts(package)
    titles = [title for title, _ in charts]
    assert titles == [
        "balance over time (account_balances)",
        "Time in each status",
        "Timeline of the events",
    ]
    drawn = charts[0][1].to_dict()
    rows = next(iter(drawn["datasets"].values()))
    assert [r["balance"] for r in rows] == [
        float(v) for v in package.history["balance"].to_pylist()
    ]
    timeline = next(iter(charts[2][1].to_dict()["datasets"].values()))
    assert len(timeline) == package.trail.num_rows
    page = render_html(package)
    assert page.count("<figure>") == 3
    assert page.count("<svg") >= 3
    pdf = render_pdf(package, compress=False)
    assert pdf.count(b"/Subtype /Image") == 3
    # A large scope is charted as counts per week and type, never event by event.
    period = collect(store, Scope("period", start="2024-01-01", end="2025-01-01"))
    assert period.trail.num_rows > 1_000
    (title, chart), *_ = report_charts(period)
    assert title == "Events per week, by type"
    counted = next(iter(chart.to_dict()["datasets"].values()))
    assert sum(r["events"] for r in counted) == period.trail.num_rows
