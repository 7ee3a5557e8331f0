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


def test_verbs_that_build_no_dataframe_do_not_import_pandas(sample_lake: Path) -> None:
    lake = str(sample_lake)
    for argv in (
        ["info", lake],
        ["read", lake, "account-3", "--format", "json"],
        ["sql", lake, "SELECT count(*) FROM account_balances"],
        ["history", lake, "account_balances", "--key", "account-3", "--trail"],
    ):
        loaded = imported(
            "from esanalytics.cli import main\n"
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    assert main({argv!r}) == 0"
        )
        assert "pandas" not in loaded, argv
    # and pandas still works in such a process, through pyarrow too
    code = (
        "from esanalytics.cli import _skip_pandas_probe\n"
        "_skip_pandas_probe()\n"
        "import pandas as pd, pyarrow as pa\n"
        "frame = pd.DataFrame({'a': [1, 2]})\n"
        "assert pa.Table.from_pandas(frame).num_rows == pa.table(frame).num_rows == 2\n"
        "assert pa.table({'a': [1]}).to_pandas().shape == (1, 1)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)
