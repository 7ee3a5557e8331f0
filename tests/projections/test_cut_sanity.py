"""Cuts that cannot mean what they say are said to be so: an as-of cut in the future warns
(the log ends at T, the answer is as of now), and ``esa diff`` from a later time to an
earlier one is refused with a hint to swap."""

from __future__ import annotations

import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import esanalytics as esa
from esanalytics.catalog import account_balances
from esanalytics.engine import Session
from esanalytics.exceptions import EsaWarning, FutureCutWarning
from tests.conftest import run_esa

FUTURE = (datetime.now(UTC) + timedelta(days=400)).replace(microsecond=0)


def last_recorded(lake: Path) -> datetime:
    return esa.open(lake).read_all().to_list()[-1].recorded_at


def test_a_session_cut_in_the_future_warns_with_the_log_end(sample_lake: Path) -> None:
    end = last_recorded(sample_lake)
    with pytest.warns(FutureCutWarning) as caught:
        session = Session(esa.open(sample_lake), as_of=FUTURE)
    message = str(caught[0].message)
    assert "future" in message
    assert end.isoformat() in message
    assert issubclass(FutureCutWarning, EsaWarning)
    assert issubclass(FutureCutWarning, UserWarning)
    assert session.sql("SELECT count(*) FROM events").fetchall()[0][0] == 30_000
    plain = Session(esa.open(sample_lake))
    with pytest.warns(FutureCutWarning):
        account_balances.state(plain, as_of=FUTURE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a past or present cut says nothing
        Session(esa.open(sample_lake), as_of=end)
        account_balances.state(plain, as_of=datetime.now(UTC))


def test_a_reversed_diff_in_python_is_the_diff_read_backwards(sample_lake: Path) -> None:
    """The Python API compares the two cuts it is given, in the order given (a property test
    in test_reference_fold relies on it); only the CLI's FROM/TO refuses a reversed order."""
    session = Session(esa.open(sample_lake))
    early, late = "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"
    forward = account_balances.diff(session, {"as_of": early}, {"as_of": late}).df()
    backward = account_balances.diff(session, {"as_of": late}, {"as_of": early}).df()
    assert len(forward) == len(backward) > 0
    flip = {"added": "removed", "removed": "added", "changed": "changed"}
    assert backward["change"].tolist() == forward["change"].map(flip).tolist()
    assert backward["balance_before"].tolist() == forward["balance_after"].tolist()


def test_cli_warns_on_a_future_cut_and_refuses_a_reversed_diff(sample_lake: Path) -> None:
    lake = str(sample_lake)
    end = last_recorded(sample_lake)
    for args in (
        ["sql", lake, "SELECT count(*) AS n FROM events", "--as-of", FUTURE.isoformat()],
        ["state", lake, "account_balances", "--key", "account-3", "--as-of", FUTURE.isoformat()],
    ):
        done = run_esa(*args, "--format", "json")
        assert done.returncode == 0, done.stderr
        assert "Warning" in done.stderr or "warning" in done.stderr
        assert "future" in done.stderr
        assert end.isoformat() in done.stderr
        assert "Traceback" not in done.stderr
        assert ".py:" not in done.stderr  # said plainly, not as a Python warning line
    reversed_ = run_esa("diff", lake, "account_balances", "2024-03-01", "2024-02-01")
    assert reversed_.returncode == 1
    assert "Hint:" in reversed_.stderr
    assert "esa diff" in reversed_.stderr
    assert "2024-02-01 2024-03-01" in " ".join(reversed_.stderr.split())  # swapped
    assert "Traceback" not in reversed_.stderr
    forward = run_esa("diff", lake, "account_balances", "2024-02-01", "2024-03-01")
    assert forward.returncode == 0, forward.stderr
    assert "warning" not in forward.stderr.lower()
