"""A throwaway PostgreSQL cluster for the tests, from Debian's server binaries.

:func:`start` makes a cluster in a temporary folder (``initdb``), starts it on 127.0.0.1 at a
free port and hands back a :class:`Postgres`; :meth:`Postgres.stop` stops it and removes the
folder. As root the server runs as the ``postgres`` user (``initdb`` refuses root), in a
folder that user owns. The superuser ``esa`` logs in without a password (``trust``); the user
``secret`` (password ``right``) needs its password, for the refused-login tests.

The binaries are the newest ``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql`` package,
which ``.ci/run`` installs), or the folder ``ESA_PG_BIN`` names.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

USER = "esa"
PASSWORD_USER, PASSWORD = "secret", "right"


def binaries() -> Path:
    """The folder of the newest PostgreSQL server binaries, or a RuntimeError saying how to
    install them."""
    given = os.environ.get("ESA_PG_BIN")
    found = [given] if given else glob.glob("/usr/lib/postgresql/*/bin")
    found = [f for f in found if (Path(f) / "initdb").is_file() and (Path(f) / "pg_ctl").is_file()]
    if not found:
        raise RuntimeError(
            "The PostgreSQL tests need Debian's PostgreSQL server binaries "
            "(/usr/lib/postgresql/*/bin/initdb and pg_ctl), and there are none. "
            "Install them with: apt-get install -y postgresql (.ci/run does this), "
            "or point ESA_PG_BIN at a folder holding initdb and pg_ctl."
        )
    return Path(
        max(found, key=lambda f: int(Path(f).parent.name) if Path(f).parent.name.isdigit() else 0)
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Postgres:
    """A running cluster: ``url()`` for a database in it, :meth:`database` for a fresh one."""

    folder: Path
    bin: Path
    port: int
    host: str = "127.0.0.1"
    _as: dict[str, Any] = field(default_factory=dict, repr=False)
    _names: itertools.count[int] = field(default_factory=itertools.count, repr=False)

    def url(
        self, database: str = "postgres", *, user: str = USER, password: str | None = None
    ) -> str:
        login = user if password is None else f"{user}:{password}"
        return f"postgresql://{login}@{self.host}:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database (CREATE DATABASE: some ms); its URL, as the ``esa`` user."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def execute(self, url: str, sql: str) -> None:
        import psycopg

        with psycopg.connect(url, autocommit=True) as con:
            con.execute(sql)  # type: ignore[arg-type]

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            cwd=self.folder,
            timeout=120,
            **self._as,
        )

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and remove its folder."""
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "stop", "-D", str(self.folder / "data"), "-m", "immediate", "-w")
        shutil.rmtree(self.folder, ignore_errors=True)


def start() -> Postgres:
    """Make, start and hand back a throwaway cluster (stopped again if starting fails)."""
    bin = binaries()
    folder = Path(tempfile.mkdtemp(prefix="esa-pg-"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:  # initdb refuses root: the postgres user runs it, in a folder it owns
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(
                "The PostgreSQL tests run as root here, and there is no 'postgres' user to run "
                "the server as (initdb refuses root). Install Debian's postgresql package "
                "(apt-get install -y postgresql), which creates it."
            ) from None
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        run_as = {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}
    server = Postgres(folder, bin, _free_port(), _as=run_as)
    try:
        done = server._run(
            "initdb", "-D", str(folder / "data"), "-U", USER, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync",
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        # trust for the test user; a password for PASSWORD_USER (the refused-login tests)
        (folder / "data" / "pg_hba.conf").write_text(
            f"local all all trust\n"
            f"host all {PASSWORD_USER} 127.0.0.1/32 scram-sha-256\n"
            f"host all all 127.0.0.1/32 trust\n"
        )
        options = (
            f"-h 127.0.0.1 -p {server.port} -k {folder} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
        )
        done = server._run(
            "pg_ctl", "start", "-D", str(folder / "data"), "-w", "-t", "60", "-o", options,
            "-l", str(folder / "server.log"),
        )  # fmt: skip
        if done.returncode:
            log = (
                (folder / "server.log").read_text(errors="replace")
                if (folder / "server.log").exists()
                else ""
            )
            raise RuntimeError(f"PostgreSQL did not start:\n{done.stdout}\n{done.stderr}\n{log}")
        server.execute(server.url(), f"CREATE ROLE {PASSWORD_USER} LOGIN PASSWORD '{PASSWORD}'")
    except BaseException:
        server.stop()
        raise
    return server
