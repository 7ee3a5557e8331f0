"""DuckDB reads a lake's Parquet on object storage through the filesystem the toolkit registers
(httpfs is not installable here), and still skips row groups and partitions: the same query
plan, and the same row groups read, as on the local copy; bytes fetched only for what it reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from esanalytics.store.s3 import S3FS, register_with_duckdb

ROWS, GROUP = 200_000, 10_000
HIVE = "hive_partitioning = true, hive_types = {'category': VARCHAR, 'month': VARCHAR}"


@pytest.fixture(scope="module")
def lakes(s3server: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, S3FS, list[str]]:
    """Four hive-partitioned files, written locally and copied byte for byte to S3."""
    local = tmp_path_factory.mktemp("duck")
    fs = S3FS(f"s3://{s3server.bucket()}/lake", s3server.options())
    rels = []
    for category in ("account", "loan"):
        for month in ("2024-01", "2024-02"):
            rel = f"events/category={category}/month={month}/part.parquet"
            table = pa.table(
                {
                    "global_position": pa.array(range(ROWS), pa.int64()),
                    "stream_id": [f"{category}-{i % 977}" for i in range(ROWS)],
                }
            )
            (local / rel).parent.mkdir(parents=True)
            pq.write_table(table, local / rel, row_group_size=GROUP)
            fs.write_atomic(rel, (local / rel).read_bytes())
            rels.append(rel)
    return local, fs, rels


def _profile(con: duckdb.DuckDBPyConnection, sql: str) -> dict[str, Any]:
    """The scan's counters from DuckDB's JSON profile of ``sql``."""
    con.execute("PRAGMA enable_profiling = 'json'")
    profile = json.loads(con.execute(f"EXPLAIN ANALYZE {sql}").fetchall()[0][1])
    con.execute("PRAGMA disable_profiling")

    def scans(node: dict[str, Any]) -> list[dict[str, Any]]:
        found = [node] if node.get("name") == "READ_PARQUET" else []
        for child in node.get("children", ()):
            found += scans(child)
        return found

    [scan] = [s for op in profile["operator"] for s in scans(op)]
    return {
        "groups": scan["row_groups_scanned"],
        "of": scan["total_row_groups_to_scan"],
        "files": int(scan["extra_info"]["Total Files Read"]),
        "bytes": profile["io"]["total_bytes_read"],
    }


def _query(paths: list[str]) -> str:
    listed = "[" + ", ".join(f"'{p}'" for p in paths) + "]"
    return (
        f"SELECT count(*), max(stream_id) FROM read_parquet({listed}, {HIVE}) "
        "WHERE category = 'loan' AND global_position BETWEEN 123000 AND 125000"
    )


def test_duckdb_skips_row_groups_and_partitions_on_s3_as_on_disk(
    lakes: tuple[Path, S3FS, list[str]],
) -> None:
    local, fs, rels = lakes
    con = duckdb.connect()
    assert register_with_duckdb(con, fs) == "fsspec"  # httpfs does not load here
    on_disk = con.execute(_query([str(local / r) for r in rels])).fetchall()
    on_s3 = con.execute(_query([fs.uri(r) for r in rels])).fetchall()
    streams = [f"loan-{i % 977}" for i in range(123_000, 125_001)]  # in each of two months
    assert on_s3 == on_disk == [(2 * len(streams), max(streams))]

    disk, s3 = (
        _profile(con, _query([str(local / r) for r in rels])),
        _profile(con, _query([fs.uri(r) for r in rels])),
    )
    # the partition filter leaves two of the four files, and the position filter one row
    # group in each: the same plan on S3 as on disk
    assert disk["files"] == s3["files"] == 2
    assert disk["of"] == s3["of"] == 2 * ROWS // GROUP
    assert disk["groups"] == s3["groups"] == 2
    # and S3 was asked for the footers and those row groups, not the files
    size = sum(fs.size(r) for r in rels if "loan" in r)
    assert 0 < s3["bytes"] < size / 4, (s3, size)


def test_hive_columns_come_from_s3_paths(lakes: tuple[Path, S3FS, list[str]]) -> None:
    _, fs, rels = lakes
    con = duckdb.connect()
    register_with_duckdb(con, fs)
    listed = "[" + ", ".join(f"'{fs.uri(r)}'" for r in rels) + "]"
    got = con.execute(
        f"SELECT category, month, count(*) FROM read_parquet({listed}, {HIVE}) "
        "GROUP BY ALL ORDER BY ALL"
    ).fetchall()
    assert got == [(c, m, ROWS) for c in ("account", "loan") for m in ("2024-01", "2024-02")]


def test_threads_sharing_a_handle_read_their_own_bytes(lakes: tuple[Path, S3FS, list[str]]) -> None:
    """DuckDB's threads read one file's row groups through one shared handle (seek, then
    read): each must get the bytes at its own position (fsspec's plain wrapper mixed them
    up, and DuckDB then failed on a footer or a page it could not decode)."""
    local, fs, rels = lakes
    con = duckdb.connect(config={"threads": 4})
    register_with_duckdb(con, fs)
    sql = "SELECT sum(global_position), count(DISTINCT stream_id) FROM read_parquet({}) "
    for _ in range(5):
        for rel in rels:
            assert (
                con.execute(sql.format(f"'{fs.uri(rel)}'")).fetchall()
                == con.execute(sql.format(f"'{local / rel}'")).fetchall()
            )


def test_ranges_read_once_are_served_from_memory_the_next_time(
    lakes: tuple[Path, S3FS, list[str]],
) -> None:
    """Objects are written once under unique names: a second query over the same row groups
    asks S3 for nothing, and answers the same."""
    _, fs, rels = lakes
    fresh = S3FS(fs.url, {"endpoint_url": fs.options.endpoint_url, "key": fs.options.key,
                          "secret": fs.options.secret, "region": fs.options.region})  # fmt: skip
    con = duckdb.connect()
    register_with_duckdb(con, fresh)
    ranges = fresh.fsspec().ranges
    sql = _query([fresh.uri(r) for r in rels])
    first = con.execute(sql).fetchall()
    misses, hits = ranges.misses, ranges.hits
    assert misses > 0
    assert con.execute(sql).fetchall() == first
    assert ranges.misses == misses
    assert ranges.hits > hits
