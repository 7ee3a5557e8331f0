"""Several processes making one lake at once all get the same, working lake."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import esanalytics as esa


def _make_and_append(lake: str, index: int, start: object) -> int:
    start.wait()  # type: ignore[attr-defined]
    store = esa.open(lake, create=True)
    store.append(f"maker-{index}", [esa.NewEvent("Made", {"by": index})])
    return store.head


def test_processes_making_one_lake_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("forkserver")
    for round_ in range(4):
        lake = str(tmp_path / f"lake-{round_}")
        with context.Manager() as manager:
            start = manager.Event()
            with context.Pool(6) as pool:
                pending = [pool.apply_async(_make_and_append, (lake, i, start)) for i in range(6)]
                start.set()
                heads = [p.get(timeout=60) for p in pending]
        assert sorted(heads)[-1] == 6
        store = esa.open(lake)
        assert store.head == 6
        assert sorted(e.stream_id for e in store.read_all()) == [f"maker-{i}" for i in range(6)]
        assert not list((Path(lake) / "_esa").glob(".lake.json*"))  # no temporary left
