"""The S3 side of the filesystem seam and the commit log held one object per line, against
moto's S3 server on 127.0.0.1 (tests/s3server.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from esanalytics.exceptions import (
    CorruptLakeError,
    LakeNotFoundError,
    StorageError,
    ValidationError,
)
from esanalytics.store.commitlog import CommitLog
from esanalytics.store.objectlog import LostRace, ObjectCommitLog, line_name
from esanalytics.store.s3 import S3FS, S3Options, split_s3_url


@pytest.fixture
def fs(s3server: Any, s3_bucket: str) -> S3FS:
    return S3FS(f"s3://{s3_bucket}/lakes/one", s3server.options())


def _records(count: int) -> list[dict[str, Any]]:
    """Commit records of every kind, as the store writes them (without ``prev``)."""
    out: list[dict[str, Any]] = []
    for n in range(1, count + 1):
        if n % 3 == 0:
            out.append({"n": n, "kind": "seal", "upto": n, "add": [{"path": f"p{n}.parquet"}]})
        else:
            out.append(
                {
                    "n": n,
                    "kind": "append",
                    "first": n,
                    "last": n,
                    "last_hash": f"{n:064x}",
                    "recorded_at": 1_700_000_000_000_000 + n,
                    "note": "é" * n,  # lines of different lengths, some non-ASCII
                }
            )
    return out


def test_moto_honours_if_none_match(fs: S3FS) -> None:
    """The conditional PUT a commit is: the first create wins, the second is refused and
    leaves the object as the first wrote it."""
    assert fs.create_new("_esa/x", b"first")
    assert not fs.create_new("_esa/x", b"second")
    assert fs.read_bytes("_esa/x") == b"first"
    # a PUT whose answer was lost and that botocore sent again finds its own bytes: it won
    assert fs.create_new("_esa/x", b"first")


def test_objects_read_write_list_and_remove(fs: S3FS, s3server: Any) -> None:
    assert not fs.exists("_esa/lake.json")
    fs.write_atomic("_esa/lake.json", b'{"a": 1}')
    fs.write_atomic("_esa/lake.json", b'{"a": 2}')
    assert fs.read_bytes("_esa/lake.json") == b'{"a": 2}'
    assert fs.size("_esa/lake.json") == 8
    assert fs.exists("_esa/lake.json")
    table = pa.table({"x": list(range(5000))})
    with fs.open_output("events/category=a/month=2024-01/p.parquet") as out:
        pq.write_table(table, out)
    assert pq.read_table(fs.arrow_path("events/category=a/month=2024-01/p.parquet"), filesystem=fs.arrow).equals(table)  # fmt: skip
    fs.rename(
        "events/category=a/month=2024-01/p.parquet", "events/category=a/month=2024-01/q.parquet"
    )
    assert fs.list_files("events") == ["events/category=a/month=2024-01/q.parquet"]
    assert fs.list_files("") == ["_esa/lake.json", "events/category=a/month=2024-01/q.parquet"]
    import hashlib

    assert fs.digest("_esa/lake.json") == hashlib.sha256(b'{"a": 2}').hexdigest()
    fs.remove("_esa/lake.json")
    fs.remove("_esa/lake.json")  # missing is fine
    with pytest.raises(FileNotFoundError):
        fs.read_bytes("_esa/lake.json")
    with pytest.raises(FileNotFoundError):
        fs.size("_esa/lake.json")
    assert fs.uri("events/x.parquet") == f"s3://{fs.bucket}/lakes/one/events/x.parquet"
    # another lake in the same bucket sees none of it
    other = S3FS(f"s3://{fs.bucket}/lakes/one-more", s3server.options())
    assert other.list_files("") == []


def test_options_from_arguments_or_environment(s3server: Any) -> None:
    environ = {
        "AWS_ENDPOINT_URL": "http://e:1",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_DEFAULT_REGION": "r",
    }
    opts = S3Options.resolve({"aws_secret_access_key": "s", "region": "given"}, environ=environ)
    assert opts == S3Options(endpoint_url="http://e:1", region="given", key="k", secret="s")
    assert S3Options.resolve({"anon": "true"}, environ={}).anonymous
    with pytest.raises(ValidationError, match=r"Unknown storage option 'endpont'(.|\n)*Hint:"):
        S3Options.resolve({"endpont": "x"}, environ={})
    with pytest.raises(ValidationError, match="s3://<bucket>/<prefix>"):
        split_s3_url("s3:///lake")
    assert split_s3_url("s3://b/a/b/") == ("b", "a/b")


def test_missing_bucket_and_refused_key_are_named(s3server: Any) -> None:
    fs = S3FS("s3://no-such-bucket/lake", s3server.options())
    with pytest.raises(LakeNotFoundError, match="no bucket 'no-such-bucket'"):
        fs.write_atomic("_esa/lake.json", b"{}")


def test_missing_credentials_are_named(
    s3server: Any, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    fs = S3FS(f"s3://{s3_bucket}/lake", {"endpoint_url": s3server.endpoint})
    with pytest.raises(StorageError, match=r"No credentials(.|\n)*Hint:(.|\n)*AWS_ACCESS_KEY_ID"):
        fs.exists("_esa/lake.json")


def test_missing_extra_names_the_install() -> None:
    """Without boto3 an s3:// lake says which extra to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["boto3"] = None
        from esanalytics.store.s3 import S3FS
        try:
            S3FS("s3://bucket/lake")
        except Exception as error:
            print(type(error).__name__, error)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "StorageError" in done.stdout
    assert "pip install 'esanalytics[s3]'" in done.stdout


# -- the commit log, one object per line ---------------------------------------------------


def test_object_log_holds_the_local_logs_bytes(fs: S3FS, tmp_path: Path) -> None:
    """The same records make the same bytes at the same offsets, the same digests and links,
    and every read answers as the local log's does."""
    local_path = tmp_path / "commits.log"
    local_path.touch()
    local, remote = CommitLog(local_path), ObjectCommitLog(fs)
    for record in _records(14):
        end_local = local.append(dict(record), valid_end=local.size())
        end_remote = remote.append(dict(record), valid_end=remote.size())
        assert end_local == end_remote
    data = local_path.read_bytes()
    objects = fs.list_files("_esa/commits")
    assert b"".join(fs.read_bytes(o) for o in objects) == data
    fresh = ObjectCommitLog(fs)  # another process's view
    assert fresh.size() == len(data)
    mine, theirs = local.lines(0), fresh.lines(0)
    assert mine == theirs
    middle = mine[0][6].end
    assert local.read_from(middle) == fresh.read_from(middle)
    for line in mine[0][::4]:
        # (each reads back as far as it needs: the local log in 64 KiB windows)
        got, want = ObjectCommitLog(fs).lines_before(line.end), local.lines_before(line.end)
        assert got == want[len(want) - len(got) :]
        kinds = {got_line.record["kind"] for got_line in got}
        assert got[0].end == mine[0][0].end or {"seal", "append"} <= kinds
        assert ObjectCommitLog(fs).digest_at(line.end) == local.digest_at(line.end)
    assert fresh.lines(len(data)) == ([], len(data), False)


def test_a_stale_writer_loses_and_writes_nothing(fs: S3FS) -> None:
    first, second = ObjectCommitLog(fs), ObjectCommitLog(fs)
    [a, b] = _records(2)
    first.append(dict(a), valid_end=0)
    with pytest.raises(LostRace, match=r"first(.|\n)*Hint:(.|\n)*Nothing was written"):
        second.append(dict(b), valid_end=0)
    assert [line.record["n"] for line in second.lines(0)[0]] == [1]
    assert second.append(dict(b), valid_end=second.size()) == first.size()


_RACER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from esanalytics.store.objectlog import LostRace, ObjectCommitLog
    from esanalytics.store.s3 import S3FS

    url, options, go, who, count = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    log = ObjectCommitLog(S3FS(url, options))
    won = lost = 0
    size = log.size()
    (go.parent / f"ready-{who}").touch()
    while not go.exists():
        time.sleep(0.005)
    while won < count:
        record = {"n": 0, "kind": "append", "first": 1, "last": 1, "last_hash": "0" * 64,
                  "recorded_at": 1, "who": who, "i": won}
        try:
            log.append(record, valid_end=size)
            won += 1
        except LostRace:
            lost += 1
        size = log.size()
    print(json.dumps({"who": who, "won": won, "lost": lost}))
    """
)


def _race(fs: S3FS, s3server: Any, tmp_path: Path, racers: int, count: int) -> list[dict[str, Any]]:
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _RACER,
                fs.url,
                json.dumps(s3server.options()),
                str(go),
                str(i),
                str(count),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(racers)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready-*"))) < racers and time.monotonic() < deadline:
        time.sleep(0.01)  # until every racer has read the (empty) log's size: all name byte 0
    go.touch()
    out = [proc.communicate(timeout=120)[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    return [json.loads(line) for line in out]


def test_processes_racing_for_one_offset_exactly_one_wins(
    fs: S3FS, s3server: Any, tmp_path: Path
) -> None:
    results = _race(fs, s3server, tmp_path, racers=4, count=1)
    lines, _, _ = ObjectCommitLog(fs).lines(0)
    assert [line.record["who"] for line in lines[:1]] == [
        r["who"] for r in results if r["lost"] == 0
    ]  # the one that never lost took byte 0
    assert sum(r["lost"] == 0 for r in results) == 1


def test_racing_writers_never_both_win_a_line(fs: S3FS, s3server: Any, tmp_path: Path) -> None:
    """Three processes commit 15 lines each to one log: every line is some writer's, each
    writer's lines are all there once and in its order, and the chain of links holds."""
    results = _race(fs, s3server, tmp_path, racers=3, count=15)
    lines, _, torn = ObjectCommitLog(fs).lines(0)
    assert not torn
    assert len(lines) == 45
    assert sum(r["won"] for r in results) == 45
    for who in ("0", "1", "2"):
        assert [line.record["i"] for line in lines if line.record["who"] == who] == list(range(15))
    previous = "0" * 64
    for line in lines:
        assert line.prev == previous
        previous = line.digest
    assert sum(r["lost"] for r in results) > 0  # they did race


def test_damaged_objects_are_refused(fs: S3FS) -> None:
    log = ObjectCommitLog(fs)
    for record in _records(4):
        log.append(record, valid_end=log.size())
    ends = [line.end for line in log.lines(0)[0]]
    second = line_name(ends[0])
    good = fs.read_bytes(second)
    fs.write_atomic(second, good.replace(b'"kind"', b'"KIND"'))  # checksum no longer holds
    with pytest.raises(CorruptLakeError, match=r"damaged line at byte(.|\n)*Hint:"):
        ObjectCommitLog(fs).lines(0)
    fs.remove(second)  # a gap
    with pytest.raises(CorruptLakeError, match=r"the line at byte .* is missing"):
        ObjectCommitLog(fs).lines(0)
    fs.write_atomic(second, good)
    fs.write_atomic("_esa/commits/stray.txt", b"x")
    with pytest.raises(CorruptLakeError, match="not a commit line"):
        ObjectCommitLog(fs).size()
    fs.remove("_esa/commits/stray.txt")
    assert ObjectCommitLog(fs).lines(0)[1] == ends[-1]
    with pytest.raises(CorruptLakeError, match="no complete commit line ending at byte 5"):
        ObjectCommitLog(fs).lines_before(5)


def test_storage_errors_say_what_failed(s3server: Any, s3_bucket: str) -> None:
    fs = S3FS(f"s3://{s3_bucket}/lake", s3server.options() | {"endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(
        StorageError, match=r"Could not write(.|\n)*Hint: check that the object store"
    ):
        fs.write_atomic("x", b"")


def test_a_write_that_lost_its_race_runs_again_a_bounded_number_of_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from esanalytics.store import objectlog

    monkeypatch.setattr(objectlog, "COMMIT_ATTEMPTS", 4)
    calls: list[str] = []

    @objectlog.retried
    def write(times: int) -> str:
        calls.append("outer")
        inner(times)
        return "done"

    @objectlog.retried
    def inner(times: int) -> None:  # (retried by the outer call only)
        calls.append("inner")
        if calls.count("outer") <= times:  # loses the first `times` runs
            raise objectlog.LostRace(
                "lost", path="s3://b/l/_esa/commits", stream_id="", expected=None, actual=0
            )

    assert write(2) == "done"
    assert calls.count("outer") == 3  # lost twice, won on the third run
    calls.clear()
    with pytest.raises(objectlog.LostRace, match=r"4 attempts to commit(.|\n)*Hint:"):
        write(100)
    assert calls.count("outer") == 4
