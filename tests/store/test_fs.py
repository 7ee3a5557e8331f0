"""The file-system seam (store/fs.py) on local disk, and the split store's compatibility:
the seam's generic listing agrees with the local one, its writes are whole or refused, and
tunables set on ``esanalytics.store.eventstore`` still reach the code that reads them."""

from __future__ import annotations

from pathlib import Path

import pytest

import esanalytics as esa
from esanalytics.store import eventstore, writer
from esanalytics.store.fs import LakeFS, LocalFS


def _lake_with_debris(tmp_path: Path) -> LocalFS:
    lake = tmp_path / "lake"
    store = esa.open(lake, create=True)
    for n in range(3):
        store.append(f"s-{n}", [esa.NewEvent("Happened", {"n": n})])
    store.flush()
    store.close()
    folder = next((lake / "events").glob("category=*/month=*"))
    (folder / ".a000000000099-seal-000.parquet.tmp").write_bytes(b"debris")
    (folder / "deeper").mkdir()
    (folder / "deeper" / ".a1.parquet.tmp").write_bytes(b"not at the partition's depth")
    return LocalFS(lake)


def test_the_generic_glob_finds_what_the_local_one_finds(tmp_path: Path) -> None:
    """A backend without its own glob (object storage) lists and matches segment by
    segment; on a real lake it finds exactly what pathlib's glob finds, no deeper file."""
    fs = _lake_with_debris(tmp_path)
    for pattern in ("category=*/month=*/.a*.parquet.tmp", "category=*/month=*/*.parquet"):
        local = sorted(fs.glob("events", pattern))
        generic = sorted(LakeFS.glob(fs, "events", pattern))
        assert generic == local
        assert local  # (the pattern matches something: the comparison can fail)
    assert all("/deeper/" not in p for p in LakeFS.glob(fs, "events", "category=*/month=*/.a*"))


def test_list_files_is_recursive_sorted_and_lake_relative(tmp_path: Path) -> None:
    fs = _lake_with_debris(tmp_path)
    listed = fs.list_files("events")
    walked = sorted(
        p.relative_to(fs.root).as_posix() for p in (fs.root / "events").rglob("*") if p.is_file()
    )
    assert listed == walked
    assert fs.list_files("no-such-folder") == []
    assert fs.children("") == ["_esa", "events"]


def test_create_new_writes_once_and_write_atomic_replaces(tmp_path: Path) -> None:
    fs = LocalFS(tmp_path)
    assert fs.create_new("marker.json", b"first") is True
    assert fs.create_new("marker.json", b"second") is False
    assert fs.read_bytes("marker.json") == b"first"
    fs.write_atomic("marker.json", b"third")
    assert fs.read_bytes("marker.json") == b"third"
    assert fs.size("marker.json") == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker.json"]  # no temporary left
    fs.remove("marker.json")
    fs.remove("marker.json")  # (missing is fine)
    assert not fs.exists("marker.json")


def test_a_tunable_set_on_eventstore_reaches_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Code written before the split sets SEAL_ROWS on eventstore: the appends (now in
    writer.py) seal at that count, and undoing the patch restores both modules."""
    before = writer.SEAL_ROWS
    monkeypatch.setattr(eventstore, "SEAL_ROWS", 3)
    monkeypatch.setattr(eventstore, "SEAL_AGE_US", 10**15)  # (no seal by age on a slow machine)
    assert writer.SEAL_ROWS == 3
    store = esa.open(tmp_path / "lake", create=True)
    for n in range(3):
        store.append(f"s-{n}", [esa.NewEvent("Happened", {"n": n})])
    assert len(store.unsealed()) == 0  # the third append sealed all three
    assert sum(entry.rows for entry in store.files()) == 3
    monkeypatch.undo()
    assert writer.SEAL_ROWS == eventstore.SEAL_ROWS == before
