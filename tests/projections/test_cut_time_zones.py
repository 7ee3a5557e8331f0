"""Every time cut is independent of the DuckDB session's time zone: the SQL macros
(``events_as_of``, ``events_bitemporal``, ``<projection>_as_of``) and the Session's own cuts,
in several zones, against a pandas oracle, with events right at month boundaries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import esanalytics as esa
from esanalytics.catalog import account_balances
from esanalytics.engine import Session

ZONES = ("UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham")
BOUNDARIES = [datetime(2025, m, 1, tzinfo=UTC) for m in (2, 3, 4)]
US = timedelta(microseconds=1)


def _times() -> list[datetime]:
    """Recorded times crowding each month boundary (on both sides, to the microsecond, and
    within the hours any zone's offset spans), in order."""
    offsets = [-14, -5, -1, 0, 1, 2, 5, 14]
    out = {b + timedelta(hours=h) for b in BOUNDARIES for h in offsets}
    out |= {b + d for b in BOUNDARIES for d in (-US, timedelta(0), US)}
    out.add(datetime(2025, 3, 1, 1, 40, tzinfo=UTC))
    return sorted(out)


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("zones") / "lake"
    store = esa.open(path, create=True)
    times = _times()
    rows = len(times)
    store.ingest(
        pa.table(
            {
                "stream_id": [f"account-{i % 3}" for i in range(rows)],
                "event_type": ["MoneyDeposited"] * rows,
                # every third event happened a day before it was recorded
                "occurred_at": pa.array(
                    [t - timedelta(days=1) if i % 3 == 0 else t for i, t in enumerate(times)],
                    pa.timestamp("us", "UTC"),
                ),
                "recorded_at": pa.array(times, pa.timestamp("us", "UTC")),
                "data": [json.dumps({"amount": i + 1}) for i in range(rows)],
                "metadata": ["{}"] * rows,
            }
        )
    )
    months = {f.month for f in store.files()}
    assert {"2025-01", "2025-02", "2025-03", "2025-04"} <= months
    return path


@pytest.fixture(scope="module")
def frame(lake: Path) -> pd.DataFrame:
    return esa.open(lake).read_all().to_pandas()


def oracle(frame: pd.DataFrame, system: datetime, valid: datetime | None = None) -> list[int]:
    keep = frame["recorded_at"] <= pd.Timestamp(system)
    if valid is not None:
        keep &= frame["occurred_at"] <= pd.Timestamp(valid)
    return sorted(frame.loc[keep, "global_position"].tolist())


def balances(frame: pd.DataFrame, system: datetime) -> dict[str, float]:
    cut = frame[frame["recorded_at"] <= pd.Timestamp(system)]
    amounts = cut["data"].map(lambda text: json.loads(text)["amount"])
    return {k: float(v) for k, v in amounts.groupby(cut["stream_id"]).sum().items()}


def spellings(moment: datetime) -> list[str]:
    """The same instant written the ways a SQL user writes it."""
    iso = moment.isoformat(timespec="microseconds")
    kolkata = moment.astimezone(pd.Timestamp(0, tz="Asia/Kolkata").tzinfo).isoformat()
    return [
        f"'{iso.replace('+00:00', 'Z')}'",
        f"'{kolkata}'",
        f"TIMESTAMPTZ '{iso}'",
        f"'{moment.replace(tzinfo=None).isoformat(sep=' ')}'",  # no zone: read as UTC
    ]


def zoned(lake: Path, zone: str) -> Session:
    session = Session(esa.open(lake))
    session.con.execute(f"SET TimeZone = '{zone}'")
    return session


def positions(session: Session, sql: str) -> list[int]:
    return sorted(row[0] for row in session.sql(sql).fetchall())


@pytest.mark.parametrize("zone", ZONES)
def test_the_issue_case_keeps_the_march_events(lake: Path, frame: pd.DataFrame, zone: str) -> None:
    session = zoned(lake, zone)
    cut = datetime(2025, 3, 1, 1, 40, tzinfo=UTC)
    got = positions(session, "SELECT global_position FROM events_as_of('2025-03-01 01:40Z')")
    assert got == oracle(frame, cut)
    assert frame.loc[frame["global_position"] == got[-1], "recorded_at"].item() == cut


@settings(max_examples=60)
@given(
    zone=st.sampled_from(ZONES),
    boundary=st.sampled_from(BOUNDARIES),
    shift_us=st.integers(-15 * 3_600_000_000, 15 * 3_600_000_000),
    valid_shift=st.integers(-2 * 86_400_000_000, 86_400_000_000),
)
def test_macros_and_session_cuts_ignore_the_session_time_zone(
    lake: Path,
    frame: pd.DataFrame,
    zone: str,
    boundary: datetime,
    shift_us: int,
    valid_shift: int,
) -> None:
    system = boundary + timedelta(microseconds=shift_us)
    valid = system + timedelta(microseconds=valid_shift)
    session = zoned(lake, zone)
    expected = oracle(frame, system)
    for written in spellings(system):
        got = positions(session, f"SELECT global_position FROM events_as_of({written})")
        assert got == expected, (zone, written)
    both = oracle(frame, system, valid)
    v = f"'{valid.isoformat()}'"
    for written in spellings(system)[:2]:
        sql = f"SELECT global_position FROM events_bitemporal({written}, {v})"
        assert positions(session, sql) == both, (zone, written)
    # The projection's macro, and the Session's own cuts (rendered in Python).
    account_balances.register(session)
    macro = session.sql(
        f"SELECT key, balance FROM account_balances_as_of('{system.isoformat()}')"
    ).fetchall()
    assert {k: float(v) for k, v in macro} == balances(frame, system)
    state = account_balances.state(session, as_of=system).fetchall()
    assert {row[0]: float(row[3]) for row in state} == balances(frame, system)
    cut = positions(session, f"SELECT global_position FROM {session.cut(as_of=system)}")
    assert cut == expected
    pinned = Session(esa.open(lake), as_of=system)
    pinned.con.execute(f"SET TimeZone = '{zone}'")
    assert positions(pinned, "SELECT global_position FROM events") == expected


@pytest.mark.parametrize("zone", ZONES[1:])
def test_audit_exceptions_do_not_move_with_the_session_time_zone(
    sample_lake: Path, zone: str
) -> None:
    from esanalytics.audit import Scope, audit_exceptions

    scope = Scope("period", start="2024-03-01", end="2024-05-01")
    utc = audit_exceptions(Session(esa.open(sample_lake)), scope).to_pylist()
    assert {r["kind"] for r in utc} >= {"after_hours", "back_dated"}
    assert audit_exceptions(zoned(sample_lake, zone), scope).to_pylist() == utc
