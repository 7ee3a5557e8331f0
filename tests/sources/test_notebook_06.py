"""notebooks/06-bring-your-own-log runs headless with no lake given: it writes its own export
in a scratch folder (nothing in notebooks/), shows no warning, answers its as-of question
(checked in the notebook against pandas on the file), and draws both charts as Vega 5 with a
PNG, as tests/test_notebook_output.py asks of the other notebooks."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[2] / "notebooks" / "06-bring-your-own-log.ipynb"


def test_notebook_06_runs_clean_and_draws_its_answer(tmp_path: Path) -> None:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    shutil.copy(NOTEBOOK, folder)
    book = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    NotebookClient(
        book, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()
    assert sorted(p.name for p in folder.iterdir()) == [NOTEBOOK.name]
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert not [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert "events had a commit time that went back" in printed
    assert ": delivered as of 2025-03-20T12:00:00Z, refunded now" in printed
    shown = "".join(o.get("data", {}).get("text/plain", "") for o in outputs)
    assert "nothing new in the source since the last run" in shown  # the re-run
    assert "ImportSummary(" not in shown
    charts = [o["data"] for o in outputs if "image/png" in o.get("data", {})]
    assert len(charts) == 2
    for chart in charts:
        assert sorted(chart) == ["application/vnd.vega.v5+json", "image/png", "text/plain"]
        assert not [d for d in chart["application/vnd.vega.v5+json"]["data"] if "url" in d]
