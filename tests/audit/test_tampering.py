"""Tampering the default verify used to call clean (issue 11, section 3), and SQL that could
corrupt the lake silently (section 5): each is found by the quick verify, refused by readers
and writers with a hint, or both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics.audit import make_checkpoint, make_key, read_key, verify
from esanalytics.engine import Session
from esanalytics.store.commitlog import encode_line
from tests.conftest import log_bytes, run_esa


def events(n: int, stream: str = "account-1") -> list[esa.NewEvent]:
    return [esa.NewEvent("MoneyDeposited", {"amount": i}) for i in range(n)]


def small_lake(path: Path, *, tail: int = 3) -> Path:
    """A lake with files (an ingest) and an unsealed tail of small appends saved in
    checkpoint.json (appends first, then the ingest that writes checkpoint.json)."""
    from esanalytics.sample import SampleSpec, generate

    store = esa.open(path, create=True)
    for i in range(tail):
        store.append(f"account-t{i}", events(1))
    store.ingest(generate(SampleSpec(events=2_000, seed=3)).drop_columns(["recorded_at"]))
    assert store.unsealed().num_rows == tail
    return path


def records(lake: Path) -> list[dict]:  # type: ignore[type-arg]
    log = lake / "_esa" / "commits.log"
    return [json.loads(line.rpartition("\t")[0]) for line in log.read_text().splitlines()]


def write_records(lake: Path, changed: list[dict]) -> None:  # type: ignore[type-arg]
    """Write commit lines as a careful forger would: every CRC recomputed, links left as
    they were."""
    (lake / "_esa" / "commits.log").write_bytes(b"".join(encode_line(r) for r in changed))


def assert_cli_fails(done: object, *words: str) -> None:
    out = done.stdout + done.stderr  # type: ignore[attr-defined]
    assert done.returncode == 1, out  # type: ignore[attr-defined]
    assert "Traceback" not in out, out
    assert not done.stdout.startswith("OK"), out  # type: ignore[attr-defined]
    for word in words:
        assert word in " ".join(out.split()), out


# -- 1. an edited event in the last commit line's inline rows -------------------------------


def test_an_edited_inline_event_in_the_last_commit_line_is_found_by_the_quick_verify(
    lake: Path, tmp_path: Path
) -> None:
    store = esa.open(lake, create=True)
    for i in range(5):
        store.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": i})])
    assert verify(esa.open(lake)).ok
    changed = records(lake)
    changed[-1]["rows"][0][9] = '{"amount":1000000}'  # the event hash is left as it was
    write_records(lake, changed)
    result = verify(esa.open(lake))
    assert not result.ok, str(result)
    assert [(f.kind, f.position) for f in result.findings] == [("modified", 5)]
    # The next writer refuses to link a new commit to the altered one, so a signed
    # checkpoint can never vouch for it.
    before = log_bytes(lake)
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(lake).append("account-2", events(1))
    assert "Hint:" in str(caught.value)
    assert "esa verify" in str(caught.value)
    key = read_key(make_key(tmp_path / "key"))
    with pytest.raises(esa.CorruptLakeError):
        make_checkpoint(esa.open(lake), key)
    assert log_bytes(lake) == before


def test_an_inline_event_whose_hash_was_recomputed_breaks_the_chain_to_the_next_line(
    lake: Path,
) -> None:
    store = esa.open(lake, create=True)
    for i in range(4):
        store.append("account-1", [esa.NewEvent("MoneyDeposited", {"amount": i})])
    from esanalytics.events import canonical_row, row_hash

    changed = records(lake)
    row = changed[1]["rows"][0]
    row[9] = '{"amount":1000000}'
    row[12] = row_hash(row[11], canonical_row(*row[:11]))
    changed[1]["last_hash"] = row[12]
    write_records(lake, changed)  # line 2 no longer links to line 1's digest ...
    relinked = records(lake)  # ... so a forger relinks every later line too
    import hashlib

    previous = "0" * 64
    for record in relinked:
        record["prev"] = previous
        previous = hashlib.sha256(json.dumps(record, separators=(",", ":")).encode()).hexdigest()
    write_records(lake, relinked)
    result = verify(esa.open(lake))
    assert not result.ok, str(result)
    assert ("chain_break", 3) in [(f.kind, f.position) for f in result.findings]


# -- 2. _esa/checkpoint.json ----------------------------------------------------------------


def test_altered_tail_rows_in_checkpoint_json_are_never_served(lake: Path) -> None:
    small_lake(lake)
    store = esa.open(lake)  # opened before the tampering, to verify with
    saved = lake / "_esa" / "checkpoint.json"
    state = json.loads(saved.read_text())
    assert len(state["tail"]) == 3
    state["tail"][0][9] = '{"amount":1000000}'
    saved.write_text(json.dumps(state))
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(lake).read_all()
    assert "unsealed events that differ" in str(caught.value)
    result = verify(store)
    assert [f.kind for f in result.findings] == ["saved_state"], str(result)
    assert "unsealed events" in result.findings[0].detail
    assert_cli_fails(run_esa("verify", str(lake)), "saved_state")


def test_a_file_entry_dropped_from_checkpoint_json_is_refused_and_found(lake: Path) -> None:
    small_lake(lake)
    store = esa.open(lake)  # opened before the tampering, to verify with
    saved = lake / "_esa" / "checkpoint.json"
    state = json.loads(saved.read_text())
    state["files"] = state["files"][1:]
    saved.write_text(json.dumps(state))
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(lake).read_all()
    assert "checkpoint.json" in str(caught.value)
    assert "Hint:" in str(caught.value)
    result = verify(store)
    assert "saved_state" in [f.kind for f in result.findings], str(result)
    assert_cli_fails(run_esa("verify", str(lake)), "saved_state")


# -- 3. a commit log replaced, emptied or cut ------------------------------------------------


@pytest.mark.parametrize("damage", ["garbage", "empty", "garbage-no-checkpoint"])
def test_a_replaced_or_emptied_commit_log_is_refused_and_never_verified_ok(
    lake: Path, damage: str
) -> None:
    small_lake(lake)
    log = lake / "_esa" / "commits.log"
    log.write_bytes(b"" if damage == "empty" else b"garbage\n")
    if damage.endswith("no-checkpoint"):
        (lake / "_esa" / "checkpoint.json").unlink()
    before = log_bytes(lake)
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(lake).read_all()
    assert "commits.log" in str(caught.value)
    assert "Hint:" in str(caught.value)
    result = verify(lake)  # a path: the lake no reader opens is still verified
    assert not result.ok
    assert "unnamed_file" in {f.kind for f in result.findings}, str(result)  # what readers lost
    assert_cli_fails(run_esa("verify", str(lake)), "FAILED", "commit_log")
    appended = run_esa("append", str(lake), "account-9", "MoneyDeposited", "--data", "{}")
    assert_cli_fails(appended, "Hint:")
    assert log_bytes(lake) == before


def test_a_commit_log_cut_before_checkpoint_json_is_refused(lake: Path) -> None:
    small_lake(lake)
    log = lake / "_esa" / "commits.log"
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:2]))
    with pytest.raises(esa.CorruptLakeError):
        esa.open(lake)


# -- 4. a commit line with a valid CRC that is not a commit ---------------------------------


@pytest.mark.parametrize("body", [b"not json", b'{"n": 2}', b"[1, 2]"])
def test_a_checksummed_line_that_is_not_a_commit_is_a_finding(lake: Path, body: bytes) -> None:
    import zlib

    store = esa.open(lake, create=True)
    store.append("account-1", events(2))
    opened = esa.open(lake)
    log = lake / "_esa" / "commits.log"
    log.write_bytes(log.read_bytes() + body + b"\t" + f"{zlib.crc32(body):08x}".encode() + b"\n")
    result = verify(opened)
    assert not result.ok
    assert [f.kind for f in result.findings] == ["commit_log"]
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(lake).read_all()
    assert "Hint:" in str(caught.value)
    assert_cli_fails(run_esa("verify", str(lake)), "FAILED", "commit_log")


# -- 5. materialized projections -------------------------------------------------------------


def test_an_edited_materialized_state_is_refused(lake: Path) -> None:
    from esanalytics.catalog import account_balances
    from esanalytics.materialized import MaterializedProjection

    small_lake(lake)
    assert (
        run_esa(
            "materialize", str(lake), "account_balances", "--checkpoint-every", "500"
        ).returncode
        == 0
    )
    view = MaterializedProjection(esa.open(lake), account_balances)
    current = view.current()
    assert current is not None
    path = view.folder / current["file"]
    table = pq.read_table(path)
    column = table.column_names.index("balance")
    forged = table.set_column(
        column, "balance", pa.array([10**6] * table.num_rows, table["balance"].type)
    )
    pq.write_table(forged, path)
    with pytest.raises(esa.CorruptLakeError) as caught:
        MaterializedProjection(esa.open(lake), account_balances).state()
    assert "--rebuild" in str(caught.value)
    key = table["key"][0].as_py()
    assert_cli_fails(run_esa("state", str(lake), "account_balances", "--key", key), "--rebuild")
    result = verify(esa.open(lake))
    assert [f.kind for f in result.findings] == ["projection"], str(result)
    # A checkpoint of past states is checked the same way.
    assert (
        run_esa(
            "materialize", str(lake), "account_balances", "--rebuild", "--checkpoint-every", "500"
        ).returncode
        == 0
    )
    view = MaterializedProjection(esa.open(lake), account_balances, checkpoint_every=500)
    mark = view.checkpoints()[0]
    checkpoint = view._checkpoint_path(mark)
    pq.write_table(pq.read_table(checkpoint).slice(1), checkpoint)
    result = verify(esa.open(lake))
    assert [(f.kind, f.path) for f in result.findings] == [("projection", str(checkpoint))]
    # One ingest is one file per category: reading the log is cheaper than the checkpoint
    # and the file after it, so the answer comes from the log (a checkpoint an answer does
    # read is refused: tests/projections/test_checkpoints.py).
    assert view.start(position=mark + 1) == 0
    expected = account_balances.state(Session(esa.open(lake)), position=mark + 1)
    assert view.state(position=mark + 1).equals(expected.to_arrow_table())


# -- 6. a rolled-back log, and what readers see beside what verify proves --------------------


def test_a_rolled_back_log_is_named_by_the_default_verify(lake: Path) -> None:
    from esanalytics.sample import SampleSpec, generate

    small_lake(lake, tail=0)
    meta = lake / "_esa"
    old = {name: (meta / name).read_bytes() for name in ("commits.log", "checkpoint.json")}
    more = generate(SampleSpec(events=1_500, seed=4)).drop_columns(["recorded_at"])
    esa.open(lake).ingest(
        more.set_column(0, "stream_id", pa.array([f"x-{i}" for i in range(1_500)]))
    )
    for name, data in old.items():  # the log and its saved state, rolled back together
        (meta / name).write_bytes(data)
    result = verify(esa.open(lake))
    assert not result.ok, str(result)
    kinds = {f.kind for f in result.findings}
    assert "unnamed_file" in kinds, str(result)
    assert "1,500" in str(result)  # the events on disk that no commit names
    assert_cli_fails(run_esa("verify", str(lake)), "no commit names")
    before = log_bytes(lake)  # and no writer builds on the rolled-back log
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(lake).append("account-9", events(1))
    assert "rolled back" in str(caught.value)
    assert log_bytes(lake) == before


# -- 8. esa sql cannot corrupt the lake silently ---------------------------------------------


def test_sql_refuses_to_write_into_the_lake(lake: Path, tmp_path: Path) -> None:
    small_lake(lake)
    before = log_bytes(lake)
    target = lake / "_esa" / "commits.log"
    sneaky = tmp_path / "link"
    sneaky.symlink_to(lake / "_esa")
    for query in (
        f"COPY (SELECT 1) TO '{target}' (FORMAT csv)",
        f"COPY (SELECT 1 AS x) TO '{lake}/../{lake.name}/events/x.parquet'",
        f"COPY (SELECT 1) TO '{sneaky}/commits.log' (FORMAT csv)",
        f"EXPORT DATABASE '{lake}/_esa/export'",
        f"ATTACH '{lake}/_esa/x.db' AS x",
    ):
        done = run_esa("sql", str(lake), query)
        assert_cli_fails(done, "Hint:", "inside the lake")
    done = run_esa("sql", str(lake), "SELECT 1", "--format", "csv", "--output", str(target))
    assert_cli_fails(done, "Hint:", "inside the lake")
    assert log_bytes(lake) == before
    # The user's own files stay free to write; a query that fails says why, with a hint.
    assert_cli_fails(run_esa("sql", str(lake), "SELEC 1"), "Hint:")
    out = tmp_path / "out.csv"
    done = run_esa("sql", str(lake), f"COPY (SELECT count(*) AS n FROM events) TO '{out}'")
    assert done.returncode == 0, done.stderr
    assert out.read_text().splitlines() == ["n", "2003"]


def test_sql_that_writes_into_the_lake_by_another_route_is_caught_at_once(lake: Path) -> None:
    small_lake(lake)
    query = (
        f"SET home_directory = concat('{lake.parent}', '/{lake.name}'); "
        "COPY (SELECT 'garbage' AS x) TO '~/_esa/commits.log' (FORMAT csv, HEADER false)"
    )
    done = run_esa("sql", str(lake), query)
    assert_cli_fails(done, "commits.log", "esa verify")
    with pytest.raises(esa.CorruptLakeError):  # and the next reader or writer refuses
        esa.open(lake)


# -- 7. the default verify stays quick -------------------------------------------------------


def test_the_default_verify_is_quick_and_proves_the_inline_rows(copy: Path) -> None:
    store = esa.open(copy)
    for i in range(50):
        store.append(f"account-q{i}", events(2))
    started = time.perf_counter()
    result = verify(esa.open(copy))
    assert (result.ok, result.method, result.events) == (True, "files", 30_100), str(result)
    assert time.perf_counter() - started < 5.0  # about 0.1 s; generous for loaded machines
