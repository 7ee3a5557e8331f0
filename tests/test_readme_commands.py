"""Every shell command in the README runs as written in a fresh shell (no activated .venv, no
`esa` on the PATH), and the esa commands among them do what they say on a sample lake."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def shell_lines() -> list[str]:
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.S)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def test_every_command_runs_without_an_activated_venv() -> None:
    for line in shell_lines():
        first = shlex.split(line, comments=True)[0]
        assert first == "python3", f"`{line}` needs a set-up the README does not do"


def test_the_esa_commands_run_on_a_sample_lake(sample_lake: Path, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sample-lake").symlink_to(sample_lake)
    fresh = {**os.environ, "HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    esa_lines = [x for x in shell_lines() if x.startswith("python3 -m uv run esa ")]
    assert len(esa_lines) >= 10
    for line in esa_lines:
        words = shlex.split(line.removeprefix("python3 -m uv run esa "), comments=True)
        done = subprocess.run(
            [sys.executable, "-m", "esanalytics.cli", *[re.sub(r"^~", str(tmp_path), w) for w in words]],
            cwd=tmp_path, env=fresh, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, (line, done.stderr)
        for i, word in enumerate(words[:-1]):
            if word == "--output" and not words[i + 1].endswith(".csv"):  # .csv: two extracts
                assert (tmp_path / words[i + 1]).exists(), line
    assert (tmp_path / "out" / "alice-trail.csv").exists()
    assert (tmp_path / ".esa-key").exists()
