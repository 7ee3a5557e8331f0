"""A throwaway S3 API for the tests: moto's server, in a process of its own on 127.0.0.1.

:func:`start` runs ``python -m moto.server`` at a free port and waits until it answers;
:meth:`S3Server.stop` stops it (everything it held was in its memory). moto accepts any key
and secret; :meth:`S3Server.bucket` makes a fresh bucket, so tests never share one.
:meth:`S3Server.environ` gives the ``AWS_*`` variables that point another process (the
``esa`` command, a racing writer) at it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

KEY, SECRET, REGION = "esa-test", "esa-test-secret", "us-east-1"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class S3Server:
    """A running moto server: its endpoint, options and environment for lakes in it."""

    process: subprocess.Popen[bytes]
    port: int
    _names: itertools.count[int] = field(default_factory=itertools.count, repr=False)
    _client: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def options(self) -> dict[str, Any]:
        """``storage_options`` for a lake in this server."""
        return {"endpoint_url": self.endpoint, "key": KEY, "secret": SECRET, "region": REGION}

    def environ(self) -> dict[str, str]:
        """This process's environment with the ``AWS_*`` variables that name this server."""
        return os.environ | {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client for this server (one, made on first use)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name=REGION,
        )

    def bucket(self) -> str:
        """A new, empty bucket: its name."""
        name = f"esa-{os.getpid()}-{next(self._names)}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        """Stop the server (its objects were held in its memory and temporary files)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start() -> S3Server:
    """Start moto's server on 127.0.0.1 at a free port; hand it back once it answers (a
    RuntimeError with its output if it does not within 30 s)."""
    port = _free_port()
    # (its request log goes to a file: a pipe nobody reads would fill and stall the server)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=os.environ | {"MOTO_ALLOW_NONEXISTENT_REGION": "true"},
        )
        try:
            return _wait(process, port)
        except RuntimeError:
            log.seek(0)
            raise RuntimeError(
                f"moto's S3 server did not start on 127.0.0.1:{port}: "
                f"{log.read().decode(errors='replace')[-2000:]}\n"
                "The object-storage tests need moto[server] (in the dev group: "
                "python3 -m uv sync)."
            ) from None


def _wait(process: subprocess.Popen[bytes], port: int) -> S3Server:
    server = S3Server(process, port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            try:
                server._new_client().list_buckets()
            except Exception:
                time.sleep(0.1)
                continue
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("not started")
