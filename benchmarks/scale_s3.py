"""Reading a projection from a lake on object storage beside the same lake on local disk.

Copies a local lake into moto's S3 server (started here, on 127.0.0.1, in a process of its
own; the copy is not timed), then times, in the same run and alternating, the same questions
on both: opening the lake and pinning a Session, the ``account_balances`` state now, and as
of the middle of the lake's recorded time; each state question twice: asked again on one
Session (S3's ranges then come from the handle's memory, as a local file's from the page
cache), and as the first query of a new handle (every range fetched from S3; the local file
still in the page cache). Each answer from S3 is checked against the local one. Target
(issue 16): S3 within 2x of local.

    python3 -m uv run python benchmarks/scale_s3.py LAKE [--repeat 3] [--json]

``benchmarks/scale_bench.py`` calls :func:`run`. moto serves objects from one Python process,
over HTTP on loopback, sharing the two cores with DuckDB: a 100 KB range GET takes it about
6 ms (31 ms from a 40 MB object: it copies the object to cut the range), where a local read
takes microseconds. A query that reads 57 column chunks from S3 spends most of its extra
time there, which is why an object of up to 4 MiB is fetched whole by its first read (one
GET instead of its footer and each chunk: 1M, first query of a handle, 3.20x/2.77x before,
1.45x/1.41x after); real S3 answers a first byte in 10-30 ms but in parallel without limit, so the
ratio here says what the toolkit adds beside moto, not what a network costs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import esanalytics as esa
from esanalytics.catalog import account_balances
from esanalytics.engine import Session
from esanalytics.store.s3 import S3FS, copy_lake

KEY, SECRET = "bench", "bench-secret"


@contextlib.contextmanager
def moto_server() -> Iterator[dict[str, Any]]:
    """moto's S3 server on 127.0.0.1 at a free port, for the block: its storage options."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        options = {
            "endpoint_url": f"http://127.0.0.1:{port}",
            "key": KEY,
            "secret": SECRET,
            "region": "us-east-1",
        }
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), 0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise RuntimeError("moto's server did not start") from None
                    time.sleep(0.1)
            yield options
        finally:
            process.terminate()
            process.wait(timeout=30)


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def run(lake: Path, *, repeat: int) -> list[dict[str, Any]]:
    """Copy ``lake`` into a moto S3 server and time the same reads on both; one dict per
    question: ``question``, ``local_s``, ``s3_s`` (medians of ``repeat``), ``ratio``,
    ``events`` and ``copy_s`` (the untimed copy's seconds, for the record)."""
    with moto_server() as options:
        import boto3

        boto3.session.Session().client(
            "s3",
            endpoint_url=options["endpoint_url"],
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        ).create_bucket(Bucket="bench")
        url = "s3://bench/lake"
        copy_s, _ = _timed(lambda: copy_lake(lake, S3FS(url, options)))
        local_store, s3_store = esa.open(lake), esa.open(url, storage_options=options)
        events = local_store.head
        assert s3_store.head == events
        times = Session(local_store).sql("SELECT min(recorded_at), max(recorded_at) FROM events")
        first, last = times.fetchall()[0]
        middle = first + (last - first) / 2

        questions: dict[str, Callable[[Any, Session | None], Any]] = {
            "open and pin a Session": lambda store, _: Session(store).position,
            "account_balances state now": lambda _, session: (
                account_balances.state(session).order("key").fetchall()
            ),
            "account_balances state as of the middle": lambda _, session: (
                account_balances.state(session, as_of=middle).order("key").fetchall()
            ),
        }
        sessions = {"local": Session(local_store), "s3": Session(s3_store)}
        stores = {"local": local_store, "s3": s3_store}
        rows = []
        runs = [(q, ask, False) for q, ask in questions.items()]
        runs += [(q, ask, True) for q, ask in list(questions.items())[1:]]
        for question, ask, cold in runs:
            spent: dict[str, list[float]] = {"local": [], "s3": []}
            answers: dict[str, Any] = {}
            for _ in range(repeat):
                for where in ("local", "s3"):  # alternating: the same machine load for both
                    if cold:  # a new handle: nothing of the lake in its memory (untimed)
                        stores[where] = esa.open(
                            lake if where == "local" else url,
                            storage_options=None if where == "local" else options,
                        )
                        sessions[where] = Session(stores[where])
                    seconds, answers[where] = _timed(
                        lambda w=where, a=ask: a(stores[w], sessions[w])  # type: ignore[misc]
                    )
                    spent[where].append(seconds)
            if answers["local"] != answers["s3"]:
                raise AssertionError(f"{question}: the S3 lake answered differently")
            local_s, s3_s = statistics.median(spent["local"]), statistics.median(spent["s3"])
            rows.append(
                {
                    "question": question + (", first query of a handle" if cold else ""),
                    "events": events,
                    "local_s": round(local_s, 4),
                    "s3_s": round(s3_s, 4),
                    "ratio": round(s3_s / local_s, 2),
                    "copy_s": round(copy_s, 1),
                }
            )
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("lake", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")
    args = parser.parse_args()
    rows = run(args.lake, repeat=args.repeat)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{args.lake}: {rows[0]['events']:,} events, copied to moto in {rows[0]['copy_s']} s")
    print(f"{'question':66} {'local s':>9} {'S3 s':>9} {'ratio':>6}")
    for row in rows:
        print(f"{row['question']:66} {row['local_s']:9.3f} {row['s3_s']:9.3f} {row['ratio']:6.2f}")


if __name__ == "__main__":
    main()
