"""A small tmpfs to fill, for the store's full-disk tests (root only; skipped otherwise)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


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
