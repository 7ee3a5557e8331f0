"""Shared fixtures: fresh lakes in temporary folders, and one small sample lake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import esanalytics as esa

os.environ.setdefault("TZ", "UTC")


@pytest.fixture
def lake(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def store(lake: Path) -> esa.EventStore:
    return esa.open(lake, create=True)


@pytest.fixture(scope="session")
def sample_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compacted 30,000-event sample lake, built once per test run (read-only for tests)."""
    from esanalytics.sample import SampleSpec, generate

    path = tmp_path_factory.mktemp("sample") / "lake"
    store = esa.open(path, create=True)
    store.ingest(generate(SampleSpec(events=30_000, seed=7)))
    store.compact()
    return path


@pytest.fixture
def copy(sample_lake: Path, tmp_path: Path) -> Path:
    """A private copy of the sample lake, free to damage."""
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(sample_lake, target)
    return target


def run_esa(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the esa command in a real process, as a user would; ``check`` asserts success."""
    done = subprocess.run(
        [sys.executable, "-m", "esanalytics.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def log_bytes(path: Path) -> bytes:
    """The whole state of a lake on disk, for 'nothing was written' checks."""
    parts = []
    for file in sorted(path.rglob("*")):
        if file.is_file() and file.name not in {"writer.lock", "compact.lock"}:
            parts.append(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    return b"\1".join(parts)


from hypothesis import settings  # noqa: E402

# Timings on shared 2-core machines vary; correctness, not speed, is what these tests judge.
settings.register_profile("esa", deadline=None, print_blob=True)
settings.load_profile("esa")
