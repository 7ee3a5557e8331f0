"""benchmarks/temporal_bench.py answers every question of issue 15 on a small lake with
esanalytics and with pandas, and the two answers agree (not timed: speed lives in the
benchmark's own output); it leaves the lake it measures unchanged, and its checks catch a
wrong answer."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from esanalytics.cli import build_sample

BENCH = Path(__file__).parents[1] / "benchmarks" / "temporal_bench.py"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "lake"
    build_sample(path, events=20_000, seed=3, fast=True, quiet=True)
    return path


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("temporal_bench", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["temporal_bench"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_every_answer_agrees_with_pandas_and_the_lake_is_left_unchanged(
    lake: Path, tmp_path: Path
) -> None:
    log = (lake / "_esa" / "commits.log").read_bytes()
    files = sorted(p.relative_to(lake) for p in lake.rglob("*"))
    done = subprocess.run(
        [sys.executable, str(BENCH), "--lake", str(lake), "--json", "--repeat", "1",
         "--pandas-repeat", "1", "--peer-events", "2000", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    result = json.loads(done.stdout)
    assert result["events"] == 20_000
    answered = {q["question"]: q for q in result["questions"]}
    assert len(answered) == 12
    assert all(q["agree"] is True for q in answered.values()), answered
    assert all(q["esa_s"] > 0 and q["pandas_s"] > 0 for q in answered.values())
    rebuild = result["rebuild"]
    assert {
        "typed_s",
        "typed_sum_s",
        "json_best_s",
        "json_only_s",
        "pandas_s",
        "ratio_to_typed",
    } <= set(rebuild)
    assert result["typed_twins"] == result["files"] > 0  # build_sample compacts with twins
    assert set(rebuild["json_sql"]) == {"->> per field", "from_json once"}
    assert len(result["refresh"]["incremental_runs_ms"]) == 1
    assert result["replay"]["peer_events"] == 2_000
    assert (lake / "_esa" / "commits.log").read_bytes() == log
    assert sorted(p.relative_to(lake) for p in lake.rglob("*")) == files
    assert list(tmp_path.iterdir()) == []  # its copies and temporary files are removed


def test_the_checks_catch_a_wrong_answer(lake: Path, bench: ModuleType) -> None:
    import esanalytics as esa
    from esanalytics.engine import Session

    store = esa.open(lake)
    inventory = store.inventory()
    with Session(store) as session:
        probe = bench.Lake(lake, store, session, inventory.first_recorded_at,
                           inventory.last_recorded_at, session.position)  # fmt: skip
        for question in bench.questions("account-1"):
            if question.name not in ("every entity at a valid time", "process variants of orders",
                                     "back-dated events (> 1 day)"):  # fmt: skip
                continue
            ours, theirs = question.esa(probe), question.pandas(probe)
            question.agree(ours, theirs)
            if question.name == "every entity at a valid time":
                theirs.iloc[len(theirs) // 2, theirs.columns.get_loc("balance")] += 0.01
                with pytest.raises(AssertionError, match="balance differs for 1 keys"):
                    question.agree(ours, theirs)
                with pytest.raises(AssertionError, match="keys differ"):
                    question.agree(ours, theirs.iloc[1:])
            elif question.name == "process variants of orders":
                with pytest.raises(AssertionError, match="the variants differ"):
                    question.agree(ours, theirs.iloc[:-1])
            else:
                with pytest.raises(AssertionError, match="the events found differ"):
                    question.agree(ours, theirs.iloc[1:])
