"""Open a local page in Debian's headless Chromium with no network (``unshare --net`` when
root) and report the DOM it drew and every URL it asked for."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Chromium's own background checks (updates, time); the page itself must request nothing.
BROWSER_OWN = ("google.com/", "googleapis.com/", "gstatic.com/")

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="Chromium is not installed here (.ci/run installs it; apt-get install chromium)",
)


def open_offline(page: Path, scratch: Path, *, wait_ms: int = 0) -> tuple[str, set[str]]:
    """``(dom, urls)``: the page's DOM after load (and ``wait_ms`` of virtual time for
    scripts), and the URLs the page requested other than its own file."""
    assert CHROMIUM, "CI must have Chromium: .ci/run installs it"
    net_log = scratch / "net.json"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={scratch / 'profile'}", f"--log-net-log={net_log}",
        *([f"--virtual-time-budget={wait_ms}"] if wait_ms else []), "--dump-dom", page.as_uri(),
    ]  # fmt: skip
    unshare = shutil.which("unshare")
    if unshare and os.geteuid() == 0:
        command = [unshare, "--net", *command]  # no network at all: nothing can leave
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    requested = set()
    for event in json.loads(net_log.read_text()).get("events", []):
        url = (event.get("params") or {}).get("url")
        if url:
            requested.add(url)
    from_page = {
        u
        for u in requested
        if not u.startswith(("file:", "data:", "blob:")) and not any(h in u for h in BROWSER_OWN)
    }
    return done.stdout, from_page


def open_served(url: str, scratch: Path, *, wait_ms: int) -> tuple[str, set[str]]:
    """``(dom, urls)`` for a page a local server serves (so not under ``unshare --net``):
    the DOM after ``wait_ms`` of virtual time, and the URLs requested off this machine."""
    assert CHROMIUM, "CI must have Chromium: .ci/run installs it"
    net_log = scratch / "net.json"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--window-size=1400,1600", f"--user-data-dir={scratch / 'profile'}",
        f"--log-net-log={net_log}", f"--virtual-time-budget={wait_ms}", "--dump-dom", url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    requested = {
        url
        for event in json.loads(net_log.read_text()).get("events", [])
        if (url := (event.get("params") or {}).get("url"))
    }
    away = {
        u
        for u in requested
        if u.startswith(("http:", "https:", "ws:", "wss:"))
        and not u.split("//", 1)[1].startswith(("127.0.0.1", "localhost"))
        and not any(h in u for h in BROWSER_OWN)
    }
    return done.stdout, away
