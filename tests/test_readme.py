"""Every example in the README runs, and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import duckdb

README = Path(__file__).parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_first_lines_are_the_two_commands() -> None:
    lines = README.read_text().splitlines()
    assert lines[0] == "```sh"
    assert lines[1].endswith("uv run esa demo")
    assert "uv run pytest" in lines[2]
    ci = (Path(__file__).parents[1] / ".ci" / "run").read_text()
    assert "sed -n 3p README.md" in ci  # CI runs the README's own test command


def test_python_examples_run_and_print_what_they_say() -> None:
    for code in blocks("python"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(code, str(README), "exec"), {})
        promised = [m.strip() for m in re.findall(r"print\(.*\)\s*#\s*(.*)", code)]
        assert out.getvalue().splitlines() == promised


def test_sql_example_runs_on_a_lake(sample_lake: Path) -> None:
    for sql in blocks("sql"):
        result = duckdb.sql(sql.replace("data/sample-lake", str(sample_lake))).fetchall()
        assert sum(count for _, count in result) == 30_000
