"""Verify on a lake on object storage (moto's S3 server on 127.0.0.1) does every check it does
on a local lake: the tampering catalogue of test_tampering, test_twins and test_hunt, made to
an S3 copy of the sample lake, is found and named, and a clean copy verifies as its original.
On S3 nothing is renamed: files a compaction replaced stay until vacuum, and a writer's
strays (named as a writer names its files) are not reported until vacuum would delete them."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import esanalytics as esa
from esanalytics import cli
from esanalytics.audit import verify
from esanalytics.audit.verify import VerifyResult
from esanalytics.store.objectlog import line_name
from esanalytics.store.s3 import S3FS, copy_lake

verifier = sys.modules[verify.__module__]  # (the module, not the function)


@dataclass
class Remote:
    """An S3 copy of the sample lake, free to damage."""

    url: str
    fs: S3FS
    options: dict[str, Any]

    def store(self) -> esa.EventStore:
        return esa.open(self.url, storage_options=self.options)

    def verify(self, **kwargs: Any) -> VerifyResult:
        return verify(self.store(), workers=1, **kwargs)


@pytest.fixture
def remote(sample_lake: Path, s3server: Any, s3_bucket: str) -> Remote:
    url = f"s3://{s3_bucket}/lake"
    fs = S3FS(url, s3server.options())
    copy_lake(sample_lake, fs)
    return Remote(url, fs, s3server.options())


@pytest.fixture
def environ(s3server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ``AWS_*`` variables that name the server: how a lake no store opens is verified."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        monkeypatch.setenv(name, s3server.environ()[name])


def _kinds(result: VerifyResult) -> list[str]:
    return [f.kind for f in result.findings]


def _twinned(remote: Remote, index: int = 2) -> esa.FileEntry:
    entry = sorted(remote.store().files(), key=lambda e: e.path)[index]
    assert entry.typed is not None
    return entry


def _read(remote: Remote, rel: str) -> pa.Table:
    return pq.read_table(pa.BufferReader(remote.fs.read_bytes(rel)))


def _write(remote: Remote, rel: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    remote.fs.write_atomic(rel, sink.getvalue().to_pybytes())


def test_a_clean_s3_copy_verifies_as_its_local_original(remote: Remote, sample_lake: Path) -> None:
    local = verify(esa.open(sample_lake), workers=1)
    for deep in (False, True):
        got = remote.verify(deep=deep)
        assert got.ok, str(got)
        assert (got.events, got.position, got.digest) == (
            local.events,
            local.position,
            local.digest,
        )
    assert remote.verify().method == local.method == "files"
    assert all(entry.typed is not None for entry in remote.store().files())  # twins checked


def test_files_a_compaction_replaced_stay_until_vacuum_and_are_not_findings(
    s3server: Any, s3_bucket: str
) -> None:
    url = f"s3://{s3_bucket}/compacted"
    store = esa.open(url, create=True, storage_options=s3server.options())
    for i in range(3):
        store.ingest(pa.table({"stream_id": [f"account-{i}"] * 5_000,
                               "event_type": ["MoneyDeposited"] * 5_000,
                               "data": [json.dumps({"amount": n}) for n in range(5_000)],
                               "metadata": ["{}"] * 5_000}))  # fmt: skip
    store.flush()
    before = {f"events/{e.path}" for e in store.files()}
    assert store.compact()["rows"] == 15_000
    fs = S3FS(url, s3server.options())
    replaced = before - {f"events/{e.path}" for e in store.files()}
    assert replaced
    assert replaced <= set(fs.list_files("events"))  # still there, under their names
    assert any(p.startswith("typed/") for p in fs.list_files("typed"))
    result = verify(store, workers=1)
    assert result.ok, str(result)
    assert result.events == 15_000
    store.vacuum(older_than=timedelta(0))
    assert not replaced & set(fs.list_files("events"))
    assert verify(store, workers=1).ok


def test_an_altered_twin_object_is_named_with_the_first_row_that_differs(remote: Remote) -> None:
    entry = _twinned(remote)
    assert entry.typed is not None
    rel = f"typed/{entry.typed.path}"
    table = _read(remote, rel)
    name = next(n for n in table.column_names if n.startswith("data."))
    values = table[name].to_pylist()
    other = next(i for i in range(6, len(values)) if values[i] != values[5])
    order = list(range(table.num_rows))
    order[5], order[other] = other, 5
    _write(remote, rel, table.set_column(table.column_names.index(name), name,
                                          table[name].take(pa.array(order))))  # fmt: skip
    position = _read(remote, f"events/{entry.path}")["global_position"][5].as_py()
    for deep in (False, True):
        result = remote.verify(deep=deep)
        assert _kinds(result) == ["twin"], str(result)
        finding = result.findings[0]
        assert finding.path == remote.fs.uri(rel)
        assert "not the file that was committed" in finding.detail
        assert f"row 5 (position {position})" in finding.detail
        assert name in finding.detail


def test_a_removed_twin_and_an_extra_one_are_findings(remote: Remote) -> None:
    entry = _twinned(remote)
    assert entry.typed is not None
    rel = f"typed/{entry.typed.path}"
    body = remote.fs.read_bytes(rel)
    remote.fs.remove(rel)
    result = remote.verify()
    assert _kinds(result) == ["twin"], str(result)
    assert " is missing. " in result.findings[0].detail
    remote.fs.write_atomic(rel, body)
    assert remote.verify().ok
    extra = rel.rpartition("/")[0] + "/extra.parquet"
    remote.fs.write_atomic(extra, body)
    result = remote.verify()
    assert _kinds(result) == ["twin"], str(result)
    assert "no commit names as a typed twin" in result.findings[0].detail
    assert result.findings[0].path == remote.fs.uri(extra)


def test_an_extra_events_object_no_commit_names_is_found(remote: Remote) -> None:
    entry = _twinned(remote)
    body = remote.fs.read_bytes(f"events/{entry.path}")
    extra = f"events/{entry.path.rpartition('/')[0]}/deeper/extra.parquet"
    remote.fs.write_atomic(extra, body)
    result = remote.verify()
    assert _kinds(result) == ["unnamed_file"], str(result)
    assert f"hold {entry.rows:,} events" in result.findings[0].detail
    assert "esa vacuum" in result.findings[0].detail
    assert result.findings[0].path == remote.fs.uri(extra)


def test_a_writers_stray_is_reported_once_vacuum_would_have_deleted_it(
    remote: Remote, monkeypatch: pytest.MonkeyPatch, environ: None, capsys: Any
) -> None:
    """A writer puts its files under their final names before its commit: one younger than
    vacuum's threshold is a writer about to commit (or one that lost its race), not a fault;
    one older than that is left behind and counted by plain readers."""
    entry = _twinned(remote)
    stray = f"{entry.path.rpartition('/')[0]}/a{7:012d}-0123456789-0000-000.parquet"
    remote.fs.write_atomic(f"events/{stray}", remote.fs.read_bytes(f"events/{entry.path}"))
    assert remote.verify().ok, str(remote.verify())
    monkeypatch.setattr(verifier, "STRAY_AGE", timedelta(0))
    result = remote.verify()
    assert _kinds(result) == ["unnamed_file"], str(result)
    assert result.findings[0].path == remote.fs.uri(f"events/{stray}")
    young = cli.main(["vacuum", remote.url])  # `esa vacuum` (the hint's fix) keeps it an hour
    assert young == 0
    assert f"events/{stray}" in remote.fs.list_files("events")
    assert cli.main(["vacuum", remote.url, "--older-than", "0"]) == 0  # then deletes it
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["vacuumed"] >= 0
    assert f"events/{stray}" not in remote.fs.list_files("events")
    assert remote.verify().ok


def test_an_edited_checkpoint_json_is_refused_and_found(remote: Remote, environ: None) -> None:
    store = remote.store()  # opened before the tampering, to verify with
    state = json.loads(remote.fs.read_bytes("_esa/checkpoint.json"))
    state["files"] = state["files"][1:]
    remote.fs.write_atomic("_esa/checkpoint.json", json.dumps(state).encode())
    with pytest.raises(esa.CorruptLakeError, match=r"checkpoint\.json"):
        remote.store().read_all()
    for result in (verify(store, workers=1), verify(remote.url, workers=1)):
        assert "saved_state" in _kinds(result), str(result)
        found = next(f for f in result.findings if f.kind == "saved_state")
        assert found.path == remote.fs.uri("_esa/checkpoint.json")


def test_an_altered_events_object_is_found(remote: Remote) -> None:
    entry = _twinned(remote)
    rel = f"events/{entry.path}"
    table = _read(remote, rel)
    data = table["data"].to_pylist()
    data[3] = data[3] + " "
    _write(remote, rel, table.set_column(table.schema.get_field_index("data"), "data",
                                          pa.array(data, table["data"].type)))  # fmt: skip
    result = remote.verify()
    assert "modified" in _kinds(result), str(result)
    assert next(f for f in result.findings if f.kind == "modified").position == (
        table["global_position"][3].as_py()
    )


def test_a_deleted_committed_events_object_is_found(remote: Remote) -> None:
    entry = _twinned(remote)
    remote.fs.remove(f"events/{entry.path}")
    result = remote.verify()  # (the quick pass turns to the event-by-event one)
    assert "missing_file" in _kinds(result), str(result)
    found = next(f for f in result.findings if f.kind == "missing_file")
    assert entry.path in found.detail
    assert found.path == remote.fs.uri(f"events/{entry.path}")


@pytest.mark.parametrize("damage", ["edited", "deleted"])
def test_an_edited_or_deleted_commit_object_is_found(
    remote: Remote, environ: None, damage: str
) -> None:
    names = remote.fs.list_files("_esa/commits")
    assert len(names) > 2
    victim = names[1]
    if damage == "edited":
        remote.fs.write_atomic(victim, remote.fs.read_bytes(victim).replace(b'"n":2', b'"n":7'))
    else:
        remote.fs.remove(victim)  # a gap in the log
    with pytest.raises(esa.CorruptLakeError, match="Hint:"):
        remote.store()
    result = verify(remote.url, workers=1)
    assert not result.ok
    assert result.findings[0].kind == "commit_log", str(result)
    offset = int(victim.rpartition("/")[2].split(".")[0])
    assert victim.endswith(line_name(offset).rpartition("/")[2])
    assert f"{offset:,}" in result.findings[0].detail or str(offset) in result.findings[0].detail


def test_esa_verify_exit_codes_on_s3(remote: Remote, s3server: Any) -> None:
    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "esanalytics.cli", "verify", remote.url, "--format", "json"],
            capture_output=True,
            text=True,
            env=s3server.environ(),
            timeout=300,
        )

    done = run()
    assert done.returncode == 0, done.stdout + done.stderr
    entry = _twinned(remote)
    assert entry.typed is not None
    remote.fs.remove(f"typed/{entry.typed.path}")
    done = run()
    assert done.returncode == 1, done.stdout + done.stderr
    findings = json.loads(done.stdout)["findings"]
    assert [f["kind"] for f in findings] == ["twin"]
    assert findings[0]["path"] == remote.fs.uri(f"typed/{entry.typed.path}")
