"""Issue 12 §4: start-up stays light. What each entry point imports is checked in a fresh
process (sys.modules), not timed: benchmarks/startup_bench.py prints the times."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("numpy", "pyarrow", "pandas", "duckdb", "altair", "rich")
JUPYTER = ("jupyter_server", "jupyter_client", "jupyterlab", "ipykernel", "IPython", "tornado", "zmq", "nbformat")  # fmt: skip


def imported(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=300
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_import_esanalytics_loads_nothing_heavy() -> None:
    loaded = imported("import esanalytics")
    assert not loaded & {*HEAVY, *JUPYTER}
    # and the names still resolve, on first use
    names = imported("import esanalytics as esa; esa.open, esa.NewEvent, esa.EsaError")
    assert "pyarrow" in names


def test_esa_help_loads_nothing_heavy() -> None:
    code = (
        "from esanalytics.cli import main\n"
        "import contextlib, io\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['state', '--help'])"
    )
    assert not imported(code) & {*HEAVY, *JUPYTER}


def test_a_verb_and_the_charts_load_no_jupyter_server(sample_lake: Path) -> None:
    verb = imported(
        "from esanalytics.cli import main\n"
        "import contextlib, io\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['info', {str(sample_lake)!r}])"
    )
    assert not verb & {"altair", "jsonschema", *JUPYTER}
    charts = imported("from esanalytics import viz")
    assert "altair" in charts
    assert not charts & {"rfc3987_syntax", "lark", *JUPYTER}


def test_hiding_rfc3987_syntax_lasts_only_for_the_import() -> None:
    code = (
        "import importlib.util, sys\n"
        "from esanalytics import viz\n"
        "print('rfc3987_syntax' not in sys.modules)\n"
        "print(importlib.util.find_spec('rfc3987_syntax') is not None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    hidden_during, findable_after = done.stdout.split()
    assert hidden_during == "True"
    installed = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('rfc3987_syntax') is not None)"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert findable_after == installed
