"""Notebooks a person can read anywhere: executed headless, no cell shows a warning, every
chart is Vega 5 (which JupyterLab draws itself, trusted or not) with a PNG of itself beside it
(for viewers that draw no Vega), no HTML that Lab would prefer and then blank when untrusted,
and a saved notebook stays small."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
#: Each chart's output (Vega and PNG); before: about 1.05 MB of frame alone.
CHART_BYTES = 750_000


@pytest.mark.parametrize(
    "name", ["02-point-in-time-and-bitemporal.ipynb", "03-audit-trail.ipynb"], ids=lambda n: n[:2]
)
def test_charts_carry_an_image_and_the_saved_notebook_stays_small(
    name: str, sample_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ESA_LAKE", str(sample_lake))
    book = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(
        book, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    saved = tmp_path / name
    nbformat.write(book, saved)
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    warned = [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"]
    assert not warned, warned  # e.g. IPython's UserWarning about a hand-built iframe
    charts = [o["data"] for o in outputs if "image/png" in o.get("data", {})]
    assert charts
    for chart in charts:
        # JupyterLab picks the bundle's lowest-ranked safe type in an untrusted notebook:
        # text/html (50) would win and be sanitized blank; Vega 5 (57) is drawn by Lab itself.
        assert sorted(chart) == ["application/vnd.vega.v5+json", "image/png", "text/plain"]
        assert chart["text/plain"].startswith("<chart")  # not "alt.VConcatChart(...)"
        vega = chart["application/vnd.vega.v5+json"]
        assert vega["$schema"].endswith("/vega/v5.json")  # what Lab's bundled Vega 5 reads
        assert vega["data"]
        assert not [d for d in vega["data"] if "url" in d]  # the data inlined, nothing fetched
        assert base64.b64decode(chart["image/png"])[:4] == b"\x89PNG"
        assert len(json.dumps(chart)) < CHART_BYTES, {k: len(v) for k, v in chart.items()}
    assert saved.stat().st_size < CHART_BYTES * len(charts) + 300_000
    if name.startswith("03"):  # the report is shown through _repr_html_, in its own frame
        report = [o["data"]["text/html"] for o in outputs if "audit report" in str(o.get("data"))]
        assert report
        assert report[-1].startswith("<iframe srcdoc=")
