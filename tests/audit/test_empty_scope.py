"""An empty scope is said, never reported as clean: a report (Python or CLI) on a misspelt
entity, an unknown actor or correlation id, or a quiet period is refused with the close
names it could have meant; ``esa state/history --key`` on an unknown key likewise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import esanalytics as esa
from esanalytics.audit import Scope, collect
from esanalytics.exceptions import EmptyScopeError
from tests.conftest import log_bytes, run_esa


@pytest.mark.parametrize(
    ("scope", "said", "suggested"),
    [
        (Scope("entity", "acount-42"), "no events for the entity 'acount-42'", "account-42"),
        (Scope("entity", "account-99999"), "no events for the entity 'account-99999'", None),
        (Scope("actor", "alcie"), "no events by the actor 'alcie'", "alice"),
        (Scope("correlation", "00000000-0000-4000-8000-000000000000"), "correlation", None),
        (
            Scope("period", start="2020-01-01", end="2020-02-01"),
            "no events were recorded in",
            None,
        ),
    ],
)
def test_collect_refuses_an_empty_scope_and_names_close_ones(
    sample_lake: Path, scope: Scope, said: str, suggested: str | None
) -> None:
    store = esa.open(sample_lake)
    with pytest.raises(EmptyScopeError) as caught:
        collect(store, scope)
    error = caught.value
    assert said in error.problem.lower()
    assert error.hint
    assert isinstance(error, LookupError)
    assert error.scope == scope
    if suggested is not None:
        assert suggested in error.suggestions
        assert suggested in error.hint
    if scope.kind == "period":
        assert "2024-01-01" in error.hint  # where the log's recorded times begin


def test_a_scope_empty_at_the_pinned_position_is_refused_too(lake: Path) -> None:
    store = esa.open(lake, create=True)
    store.append("account-1", [esa.NewEvent("AccountOpened", {"owner": "Ada"})])
    store.append("account-2", [esa.NewEvent("AccountOpened", {"owner": "Bo"})])
    with pytest.raises(EmptyScopeError, match="position 1"):
        collect(store, Scope("entity", "account-2"), position=1)
    assert collect(store, Scope("entity", "account-2")).trail.num_rows == 1


def test_cli_report_on_a_misspelt_entity_fails_and_writes_nothing(
    copy: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.html"
    before = log_bytes(copy)
    for scope in (
        ["--entity", "account-99999"],
        ["--actor", "nobody"],
        ["--correlation", "nope"],
        ["--period", "2020-01-01", "2020-02-01"],
    ):
        done = run_esa("report", str(copy), *scope, "--output", str(out))
        assert done.returncode == 1, (scope, done.stdout)
        assert "Traceback" not in done.stderr
        assert "no events" in done.stderr.lower()
        assert "Hint:" in done.stderr
        assert not out.exists()
        assert "All 0 events" not in done.stdout
    assert log_bytes(copy) == before
    ok = run_esa("report", str(copy), "--entity", "account-3", "--output", str(out))
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["events"] > 0


@pytest.mark.parametrize("verb", ["state", "history", "trail"])
def test_cli_state_and_history_on_an_unknown_key_fail_with_close_keys(
    sample_lake: Path, verb: str
) -> None:
    args = ["history", str(sample_lake), "account_balances", "--key", "acount-42"]
    if verb == "state":
        args[0] = "state"
    if verb == "trail":
        args.append("--trail")
    done = run_esa(*args)
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    assert "acount-42" in done.stderr
    assert "Hint:" in done.stderr
    assert "account-42" in done.stderr  # the close key it could have meant
    known = run_esa(*[a if a != "acount-42" else "account-42" for a in args], "--format", "json")
    assert known.returncode == 0, known.stderr
    assert known.stdout.strip()


def test_cli_state_of_a_key_not_yet_recorded_at_the_cut_says_when_it_begins(
    sample_lake: Path,
) -> None:
    first = esa.open(sample_lake).read_stream("account-42").to_list()[0].recorded_at
    done = run_esa(
        "state", str(sample_lake), "account_balances", "--key", "account-42",
        "--as-of", "2024-01-01T00:00:00Z",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert first.date().isoformat() in done.stderr


def test_cli_read_and_chart_of_an_unknown_stream_fail_with_close_ids(
    sample_lake: Path, tmp_path: Path
) -> None:
    lake = str(sample_lake)
    out = tmp_path / "chart.svg"
    for args in (
        ["read", lake, "acount-42"],
        ["chart", lake, "intervals", "--key", "acount-42", "--output", str(out)],
        ["chart", lake, "timeline", "--key", "acount-42", "--output", str(out)],
    ):
        done = run_esa(*args)
        assert done.returncode == 1, (args, done.stdout)
        assert "Traceback" not in done.stderr
        assert "'account-42'" in done.stderr
        assert "Hint:" in done.stderr
        assert not out.exists()
    first = esa.open(sample_lake).read_stream("account-42").to_list()[0].recorded_at
    early = run_esa("read", lake, "account-42", "--as-of", "2024-01-01")
    assert early.returncode == 1
    assert first.isoformat()[:19] in " ".join(early.stderr.split())


def test_cli_state_from_a_materialized_view_refuses_an_unknown_key_too(copy: Path) -> None:
    from esanalytics.catalog import account_balances
    from esanalytics.materialized import MaterializedProjection

    MaterializedProjection(esa.open(copy), account_balances).refresh()
    done = run_esa("state", str(copy), "account_balances", "--key", "acount-42")
    assert "materialized" in done.stderr
    assert done.returncode == 1, done.stdout
    assert "account-42" in done.stderr
    assert "Hint:" in done.stderr
