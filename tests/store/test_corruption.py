"""A damaged lake gives an error naming the file, never silently fewer rows."""

from __future__ import annotations

from pathlib import Path

import pytest

import esanalytics as esa


def a_file(lake: Path) -> Path:
    return sorted((lake / "events").rglob("*.parquet"))[3]


def test_truncated_file_is_named(copy: Path) -> None:
    victim = a_file(copy)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(copy).read_all()
    assert caught.value.path == str(victim)
    assert "Hint:" in str(caught.value)


def test_garbage_file_is_named(copy: Path) -> None:
    victim = a_file(copy)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    victim.write_bytes(bytes(data))
    with pytest.raises(esa.CorruptLakeError):
        esa.open(copy).read_all()


def test_empty_file_is_named(copy: Path) -> None:
    victim = a_file(copy)
    victim.write_bytes(b"")
    with pytest.raises(esa.CorruptLakeError) as caught:
        esa.open(copy).inventory()
    assert caught.value.path == str(victim)


def test_missing_file_is_named(copy: Path) -> None:
    victim = a_file(copy)
    victim.unlink()
    with pytest.raises(esa.CorruptLakeError, match="missing") as caught:
        esa.open(copy).read_all()
    assert str(victim) in str(caught.value)


def test_damaged_commit_log_is_refused(copy: Path) -> None:
    log = copy / "_esa" / "commits.log"
    (copy / "_esa" / "checkpoint.json").unlink()
    lines = log.read_bytes().split(b"\n")
    lines[0] = lines[0].replace(b'"kind"', b'"kinx"')
    log.write_bytes(b"\n".join(lines))
    with pytest.raises(esa.CorruptLakeError, match="damaged line"):
        esa.open(copy)
