"""Issue 12 §4: running a notebook writes nothing into the folder it is in (the repository's
notebooks/); files it saves go to a scratch folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def test_notebook_04_leaves_its_folder_as_it_was(
    sample_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = next(NOTEBOOKS.glob("04-*.ipynb"))
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(source, folder)
    monkeypatch.setenv("ESA_LAKE", str(sample_lake))
    book = nbformat.read(folder / source.name, as_version=4)
    NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    assert sorted(p.name for p in folder.iterdir()) == [source.name]
    saved = [o for c in book.cells for o in c.get("outputs", []) if "esa-charts-" in str(o)]
    assert saved, "the notebook says where it saved the chart"
