"""The ``esa`` command: a thin layer over the public API (parsing, output, exit codes)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

import esanalytics as esa
from esanalytics.store._atomic import replacing, write_whole
from esanalytics.store.layout import inside_lake as _inside

DEFAULT_LAKE = Path("data") / "sample-lake"
DEFAULT_EVENTS = 200_000

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (quiet when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=_err_console(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def build_sample(
    path: Path, *, events: int, seed: int, fast: bool = False, quiet: bool = False
) -> esa.EventStore:
    """Generate the sample lake at ``path`` (in chunks, with progress) and compact it.

    By default every event is decided by the domain's deciders from the sample's commands
    (the real write path, in batch mode); ``fast`` ingests the vectorized events directly,
    which a test holds equal to what the deciders decide."""
    from esanalytics.domain import handle_batch
    from esanalytics.sample import DECIDERS, SampleSpec, commands, generate_chunks

    store = esa.open(path, create=True)
    total, chunk = generate_chunks(SampleSpec(events=events, seed=seed))
    step = 1_000_000
    started = time.perf_counter()
    how = "ingesting" if fast else "deciding"
    chunks = (chunk(start, min(start + step, total)) for start in range(0, total, step))
    with _progress(f"{how} {total:,} events", total) as advance:
        if fast:
            for table in chunks:
                store.ingest(table, progress=advance)
        else:  # one batch, so every stream's state stays in memory from chunk to chunk
            script = (command for table in chunks for command in commands(table))
            handle_batch(store, DECIDERS, script, progress=advance)
    with _progress("compacting", total) as advance:
        store.compact(progress=advance)
    if not quiet:
        elapsed = time.perf_counter() - started
        _err_console().print(
            f"built {path} with {total:,} events in {elapsed:.1f} s ({total / elapsed:,.0f} events/s)"
        )
    return store


def cmd_demo(args: argparse.Namespace) -> int:
    path = Path(args.lake)
    if not (path / "_esa" / "lake.json").exists():
        build_sample(path, events=args.events, seed=args.seed, fast=args.fast)
    store = esa.open(path)
    console = _console()
    inventory = store.inventory()
    console.rule(f"[bold]{path}")
    console.print(str(inventory))
    console.print(
        "event types " + ", ".join(f"{k} ({v:,})" for k, v in inventory.event_types.items())
    )
    streams = store.streams()
    longest = streams.sort_by([("version", "descending")]).slice(0, 3).to_pylist()
    console.print(
        "longest     " + ", ".join(f"{s['stream_id']} ({s['version']} events)" for s in longest)
    )
    stream = args.stream
    events = store.read_stream(stream)
    if not len(events):
        console.print(f"[red]{stream} has no events in this lake.")
        return EXIT_ERROR
    console.rule(f"[bold]point in time: {stream}")
    from esanalytics.catalog import account_balances
    from esanalytics.domain import CommandHandler, accounts
    from esanalytics.engine import Session

    first = events.table["recorded_at"][0].as_py()
    last = events.table["recorded_at"][-1].as_py()
    cut = (first + (last - first) / 2).replace(microsecond=0).isoformat()
    bank = CommandHandler(store, accounts.decider)
    then = bank.load(stream, as_of=cut)
    console.print(
        f"as recorded at {cut}: version {then.version}, balance {then.state.balance:.2f}, "
        f"status {then.state.status} (write-side fold)"
    )
    session = Session(store)
    sql = account_balances.state(session, as_of=cut).filter(f"key = '{stream}'").fetchall()
    if sql:
        row = dict(zip(account_balances.state(session, as_of=cut).columns, sql[0], strict=True))
        console.print(
            f"as recorded at {cut}: balance {row['balance']:.2f}, "
            f"status {row['status']} (SQL projection account_balances)"
        )
    valid = bank.load(stream, valid_at=cut)
    console.print(
        f"as true at {cut} (valid time, back-dated corrections included): "
        f"balance {valid.state.balance:.2f}"
    )
    now = bank.load(stream)
    console.print(
        f"now (position {events.position}): version {now.version}, balance {now.state.balance:.2f}, "
        f"status {now.state.status}"
    )
    console.print(
        f'\nTry: esa sql {path} "SELECT event_type, count(*) FROM events GROUP BY ALL" '
        f"--as-of {cut[:10]}\n     esa history {path} account_balances --key {stream} --trail"
        f"\n     esa verify {path}"
    )
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    path = Path(args.lake)
    if path.exists() and any(path.iterdir()):
        _err_console().print(
            f"[red]{path} is not empty.[/red]\nHint: pick a new folder, or delete this one first."
        )
        return EXIT_ERROR
    build_sample(path, events=args.events, seed=args.seed, fast=args.fast)
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    store = esa.open(args.lake)
    inventory = store.inventory()
    if args.format == "json":
        print(json.dumps(_inventory_dict(inventory), indent=2, default=str))
        return EXIT_OK
    console = _console()
    console.print(str(inventory))
    console.print(
        "event types " + ", ".join(f"{k} ({v:,})" for k, v in inventory.event_types.items())
    )
    return EXIT_OK


def _inventory_dict(inventory: esa.Inventory) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(inventory)


def cmd_read(args: argparse.Namespace) -> int:
    store = esa.open(args.lake)
    if args.as_of is not None:
        _session(args)  # says so when the cut is in the future
    events = store.read_stream(
        args.stream, as_of=args.as_of, position=args.position, from_version=args.from_version
    )
    if not len(events) and not args.from_version:
        from esanalytics.audit.trail import Scope, empty_scope_error

        raise empty_scope_error(_session(args), Scope("entity", args.stream))
    _emit(events.to_arrow(), args.format, args.columns)
    return EXIT_OK


def cmd_append(args: argparse.Namespace) -> int:
    store = esa.open(args.lake, create=args.create)
    expected: esa.ExpectedVersion | int = esa.ANY
    if args.expected_version is not None:
        names = {"any": esa.ANY, "no_stream": esa.NO_STREAM, "stream_exists": esa.STREAM_EXISTS}
        value = args.expected_version.lower()
        expected = names[value] if value in names else _int_arg(value, "--expected-version")
    event = esa.NewEvent(
        args.event_type,
        args.data,
        metadata=args.metadata,
        occurred_at=args.occurred_at,
    )
    commit = store.append(args.stream, [event], expected_version=expected)
    store.close()  # seals; a seal the disk has no room for is left for later, never an error
    print(
        json.dumps(
            {
                "position": commit.last_position,
                "version": commit.version,
                "recorded_at": commit.recorded_at.isoformat(),
                "replayed": commit.replayed,
            }
        )
    )
    return EXIT_OK


def _session(args: argparse.Namespace) -> Any:
    from esanalytics.engine import Session

    return Session(
        esa.open(args.lake),
        as_of=getattr(args, "as_of", None),
        valid_at=getattr(args, "valid_at", None),
        position=getattr(args, "position", None),
    )


def _emit_relation(relation: Any, args: argparse.Namespace) -> None:
    table = relation if isinstance(relation, pa.Table) else relation.to_arrow_table()
    if args.format == "parquet":
        import pyarrow.parquet as pq

        if not args.output:
            raise esa.ValidationError(
                "Parquet output needs a file.", hint="add --output FILE.parquet."
            )
        with replacing(args.output) as tmp:
            pq.write_table(table, tmp)
        print(json.dumps({"rows": table.num_rows, "output": args.output}))
        return
    if args.output:
        # (the file is closed before it is synced and renamed into place)
        with (
            replacing(args.output) as tmp,
            open(tmp, "w") as sink,
            contextlib.redirect_stdout(sink),
        ):
            _emit(table, args.format, None)
        return
    _emit(table, args.format, None)


def _fingerprint(lake: Path) -> dict[str, tuple[int, int, int]]:
    """Size, modification time and inode of every file in the lake."""
    stamps = {}
    for folder, _, names in os.walk(lake):
        for name in names:
            with contextlib.suppress(OSError):
                stat = os.stat(os.path.join(folder, name))
                stamps[os.path.join(folder, name)] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return stamps


def cmd_sql(args: argparse.Namespace) -> int:
    session = _session(args)
    for name in args.projection or []:
        from esanalytics.catalog import projection

        projection(name).register(session)
    lake = Path(args.lake)
    import duckdb

    from esanalytics.engine import lake_targets

    try:
        targets = lake_targets(session.con, args.query, lake)
    except duckdb.Error as error:
        raise esa.ValidationError(
            f"The query cannot be read: {error}",
            hint="fix the SQL; the lake's events are the view `events` (see `esa sql --help`).",
        ) from None
    if targets:
        raise esa.ValidationError(
            f"The query writes inside the lake ({', '.join(targets)}). Nothing was run.",
            hint="a lake's files are written only by esa, so that its commit log and "
            "digests stay true; write query results to a path outside the lake folder "
            "(any other path is yours), and add events with `esa append`.",
        )
    before = _fingerprint(lake)
    try:
        _emit_relation(session.sql(args.query), args)
    except duckdb.Error as error:
        raise esa.ValidationError(
            f"The query failed: {error}",
            hint="fix the SQL; the lake's events are the view `events` (see `esa sql --help`).",
        ) from None
    finally:
        _check_untouched(args.lake, lake, before)
    return EXIT_OK


def _check_untouched(name: str, lake: Path, before: dict[str, tuple[int, int, int]]) -> None:
    """If anything in the lake changed while a query ran, the lake must still verify: a
    query that wrote inside it by a route the textual check cannot see is named at once."""
    changed = sorted(
        path
        for path in before.keys() | _fingerprint(lake).keys()
        if before.get(path) != _fingerprint_one(path)
    )
    if changed:  # by a route the check above cannot see, or by a writer running meanwhile
        from esanalytics.audit import verify

        result = verify(name)
        if not result.ok:
            raise esa.CorruptLakeError(
                f"The lake changed while the query ran ({changed[0]} and "
                f"{len(changed) - 1} more), and `esa verify` now finds:\n{result}",
                hint=f"the query (or another program) wrote inside the lake. Restore the "
                f"files named from a backup, then run `esa verify {name}`; write query "
                "results outside the lake folder.",
            )


def _fingerprint_one(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_size, stat.st_mtime_ns, stat.st_ino)


def _materialized(args: argparse.Namespace) -> Any:
    """The lake's materialized view of the projection, when there is a current one and the
    question is on system time (its checkpoints answer those); else None."""
    from esanalytics.catalog import projection
    from esanalytics.materialized import MaterializedProjection

    if getattr(args, "valid_at", None) is not None:
        return None
    view = MaterializedProjection(esa.open(args.lake), projection(args.projection))
    current = view.current()
    if not current or current["version"] != view.projection.version:
        return None
    _err_console().print(f"answered from the materialized projection in {view.folder}")
    return view


def cmd_state(args: argparse.Namespace) -> int:
    from esanalytics.catalog import projection

    view = _materialized(args)
    if view is not None:  # the same answer, from the nearest checkpoint
        if args.as_of is not None:
            _session(args)  # says so when the cut is in the future
        table = view.state(as_of=args.as_of, position=args.position)
        if args.key:
            table = table.filter(pc.field("key") == args.key)
            if not table.num_rows:
                _require_key(_session(args), view.projection, args.key, None)
        _emit_relation(table, args)
        return EXIT_OK
    session = _session(args)
    proj = projection(args.projection)
    relation = proj.state(session)
    if args.key:
        relation = relation.filter(f"key = '{args.key.replace(chr(39), chr(39) * 2)}'")
        _require_key(session, proj, args.key, relation)
    _emit_relation(relation, args)
    return EXIT_OK


def _require_key(session: Any, proj: Any, key: str, relation: Any) -> None:
    """Refuse an answer about a key that has no events at the cut (``relation`` is the
    answer, None when known to be empty): empty output would read as "nothing there" when
    the key is misspelt or did not exist yet."""
    import difflib

    from esanalytics.exceptions import EmptyScopeError

    if relation is not None and relation.limit(1).fetchall():
        return
    category = getattr(proj, "category", None)
    where = "TRUE" if category is None else f"category = '{category.replace(chr(39), chr(39) * 2)}'"
    quoted = key.replace("'", "''")
    later = session.sql(
        f"SELECT min(recorded_at) FROM events_all WHERE stream_id = '{quoted}' AND {where}"
    ).fetchall()[0][0]
    problem = f"{proj.name} has no state for the key {key!r} at this cut."
    names: list[str] = []
    if later is not None:
        hint = (
            f"its first event was recorded at {later.isoformat()}; ask at a later --as-of, "
            "--valid-at or --position, or leave them out to answer now."
        )
    else:
        known = session.sql(f"SELECT DISTINCT stream_id FROM events_all WHERE {where}")
        names = difflib.get_close_matches(key, [row[0] for row in known.fetchall()], n=3)
        maybe = f"did you mean {' or '.join(names)}? " if names else ""
        hint = maybe + f"esa state LAKE {proj.name} without --key lists every key."
    raise EmptyScopeError(problem, hint=hint, scope=key, suggestions=names)


def cmd_materialize(args: argparse.Namespace) -> int:
    from esanalytics.catalog import projection
    from esanalytics.materialized import MaterializedProjection

    view = MaterializedProjection(
        esa.open(args.lake), projection(args.projection), checkpoint_every=args.checkpoint_every
    )
    done = view.refresh(rebuild=args.rebuild)
    print(json.dumps({**dataclasses.asdict(done), "checkpoints_kept": len(view.checkpoints())}))
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from esanalytics.catalog import projection

    session = _session(args)
    if args.trail:
        relation = projection(args.projection).trail(session, args.key)
    else:
        relation = projection(args.projection).history(session, axis=args.axis, key=args.key)
    if args.key:
        _require_key(session, projection(args.projection), args.key, relation)
    _emit_relation(relation, args)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
    from esanalytics.catalog import projection
    from esanalytics.events import to_utc

    axis = "valid_at" if args.axis == "valid" else "as_of"
    if to_utc(args.since_time, what="FROM") > to_utc(args.until_time, what="TO"):
        raise esa.ValidationError(
            f"FROM ({args.since_time}) is after TO ({args.until_time}): the diff would show "
            "every change backwards.",
            hint="swap them: "
            f"esa diff {args.lake} {args.projection} {args.until_time} {args.since_time}",
        )
    plain = args.axis == "system" and args.as_of is None and args.valid_at is None
    view = _materialized(args) if plain else None
    if view is not None:  # both sides from the nearest checkpoints
        session = _session(args)
        for moment in (args.since_time, args.until_time):
            session.warn_if_future(moment)  # as the Session answer would say
        table = view.diff({"as_of": args.since_time}, {"as_of": args.until_time})
        _emit_relation(table, args)
        return EXIT_OK
    relation = projection(args.projection).diff(
        _session(args), {axis: args.since_time}, {axis: args.until_time}
    )
    _emit_relation(relation, args)
    return EXIT_OK


def cmd_since(args: argparse.Namespace) -> int:
    from esanalytics.catalog import projection

    _emit_relation(projection(args.projection).since(_session(args), args.since_position), args)
    return EXIT_OK


CHARTS = (
    "evolution", "timeline", "intervals", "heatmap", "bitemporal", "as-of", "tree", "population",
)  # fmt: skip


def cmd_chart(args: argparse.Namespace) -> int:
    from esanalytics import viz
    from esanalytics.catalog import projection

    session = _session(args)
    proj = projection(args.projection)
    keys = args.key or []

    def need_key() -> str:
        if not keys:
            raise esa.ValidationError(
                f"The {args.kind} chart needs --key.", hint="name a stream, e.g. --key account-42."
            )
        return str(keys[0])

    field = args.field or ("status" if args.kind in ("intervals", "population") else "balance")
    kind = args.kind
    chart: Any
    if kind == "evolution":
        chart = viz.state_evolution(
            session, field, projection=proj, keys=[need_key(), *keys[1:]], axis=args.axis
        )
    elif kind == "timeline":
        chart = viz.entity_timeline(session, projection=proj, key=need_key(), axis=args.axis)
    elif kind == "intervals":
        chart = viz.state_intervals(
            session, field, projection=proj, keys=[need_key(), *keys[1:]], axis=args.axis
        )
    elif kind == "heatmap":
        chart = viz.activity_heatmap(session, by=args.by, axis=args.axis)
    elif kind == "bitemporal":
        chart = viz.bitemporal_scatter(session)
    elif kind == "as-of":
        chart = viz.as_of_view(session, key=need_key(), cut=args.cut)
    elif kind == "tree":
        if not args.correlation:
            raise esa.ValidationError(
                "The tree chart needs --correlation.",
                hint="copy a correlation_id from an event's metadata (esa read ... shows them).",
            )
        chart = viz.causation_tree(session, args.correlation)
    else:
        chart = viz.population(session, field, projection=proj, every=args.every, axis=args.axis)
    written = viz.save(chart, args.output)
    _err_console().print(f"wrote {written}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from esanalytics.audit import read_key, verify

    store: Any = args.lake
    total = 0
    try:
        store = esa.open(args.lake)
        total = store.head
    except esa.CorruptLakeError:
        pass  # a lake no reader will open: verify names why, as findings
    against = key = None
    if args.against:
        try:
            against = json.loads(Path(args.against).read_text())
        except (OSError, ValueError):
            raise esa.ValidationError(
                f"{args.against} is not a checkpoint file.",
                hint="export one with `esa checkpoint LAKE --key KEYFILE --output FILE`.",
            ) from None
        if not args.key:
            raise esa.ValidationError(
                "--against needs --key.", hint="pass the key file that signed the checkpoint."
            )
    if args.key:
        key = read_key(args.key)
    with _progress("verifying", total) as advance:
        result = verify(store, against=against, key=key, deep=args.deep, progress=advance)
    if args.format == "json":
        print(
            json.dumps(
                {**asdict(result), "findings": [asdict(f) for f in result.findings]}, default=str
            )
        )
    else:
        _console().print(str(result), markup=False)
        _console().print(f"({result.seconds:.1f} s)", markup=False)
    return EXIT_OK if result.ok else EXIT_ERROR


def cmd_report(args: argparse.Namespace) -> int:
    from esanalytics.audit import Scope, collect, read_key

    chosen = [k for k in ("entity", "actor", "correlation") if getattr(args, k)]
    if args.period:
        chosen.append("period")
    if len(chosen) != 1:
        raise esa.ValidationError(
            "A report needs exactly one scope.",
            hint="pass one of --entity ID, --actor NAME, --correlation ID or --period FROM TO.",
        )
    kind = chosen[0]
    if kind == "period":
        scope = Scope("period", start=args.period[0], end=args.period[1])
    else:
        scope = Scope(kind, getattr(args, kind))  # type: ignore[arg-type]
    checkpoint = json.loads(Path(args.against).read_text()) if args.against else None
    key = read_key(args.key) if args.key else None
    package = collect(
        esa.open(args.lake), scope, position=args.position, checkpoint=checkpoint, key=key
    )
    if args.format == "html":
        from esanalytics.report import render_html

        write_whole(args.output, render_html(package))
        written = [args.output]
    elif args.format == "pdf":
        from esanalytics.report import render_pdf

        write_whole(args.output, render_pdf(package))
        written = [args.output]
    else:
        from esanalytics.report import write_extract

        base = Path(args.output)
        trail_file = base.with_name(base.stem + "-trail." + args.format)
        exceptions_file = base.with_name(base.stem + "-exceptions." + args.format)
        sums = [write_extract(package.trail, trail_file, fmt=args.format),
                write_extract(package.exceptions, exceptions_file, fmt=args.format)]  # fmt: skip
        written = [str(trail_file), str(exceptions_file), *map(str, sums)]
    print(json.dumps({"position": package.position, "events": package.trail.num_rows,
                      "exceptions": package.exceptions.num_rows, "integrity_ok": package.integrity_ok,
                      "complete": package.complete, "written": written}))  # fmt: skip
    return EXIT_OK if package.integrity_ok else EXIT_ERROR


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from esanalytics.audit import make_checkpoint, read_key

    checkpoint = make_checkpoint(esa.open(args.lake), read_key(args.key), position=args.position)
    text = json.dumps(checkpoint, indent=2)
    if args.output:
        write_whole(args.output, text + "\n")
    print(text)
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from esanalytics.audit import make_key

    try:
        path = make_key(args.file)
    except FileExistsError:
        raise esa.ValidationError(
            f"{args.file} exists; a key is never overwritten.", hint="pick a new file name."
        ) from None
    _err_console().print(
        f"wrote a new key to {path} (keep it outside the lake, readable only by you)"
    )
    return EXIT_OK


def _int_arg(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise esa.ValidationError(
            f"{name} {value!r} is not understood.",
            hint=f"{name} takes any, no_stream, stream_exists or a version number.",
        ) from None


def cmd_compact(args: argparse.Namespace) -> int:
    store = esa.open(args.lake)
    with _progress("compacting", store.head) as advance:
        done = store.compact(progress=advance)
    removed = store.vacuum(older_than=_seconds(args.vacuum_after))
    print(json.dumps({**done, "vacuumed": removed}))
    return EXIT_OK


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def _emit(table: Any, fmt: str, columns: str | None) -> None:
    if columns:
        table = table.select([c.strip() for c in columns.split(",")])
    if fmt == "json":
        for row in table.to_pylist():
            print(json.dumps(row, default=str))
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        sink = sys.stdout.buffer
        pacsv.write_csv(table, sink)
        sink.flush()
    else:
        from rich.table import Table

        view = Table(*table.column_names, show_lines=False)
        for row in table.to_pylist():
            view.add_row(*(_cell(v) for v in row.values()))
        _console().print(view)


def _cell(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="esa", description="Inspect event logs kept as Parquet lakes."
    )
    root.add_argument("--version", action="version", version=f"esa {esa.__version__}")
    sub = root.add_subparsers(dest="command", required=True)

    def sample_options(command: argparse.ArgumentParser, events: int) -> None:
        command.add_argument("--events", type=int, default=events)
        command.add_argument("--seed", type=int, default=42)
        command.add_argument(
            "--fast",
            action="store_true",
            help="ingest the vectorized sample directly instead of deciding each command "
            "(same events, about 20x faster; for lakes of millions of events)",
        )

    demo = sub.add_parser("demo", help="build (once) and show the sample lake")
    demo.add_argument("--lake", default=str(DEFAULT_LAKE))
    sample_options(demo, DEFAULT_EVENTS)
    demo.add_argument("--stream", default="account-42")
    demo.set_defaults(run=cmd_demo)

    generate = sub.add_parser("generate", help="generate a sample lake")
    generate.add_argument("lake")
    sample_options(generate, 1_000_000)
    generate.set_defaults(run=cmd_generate)

    info = sub.add_parser("info", help="what is in a lake")
    info.add_argument("lake")
    info.add_argument("--format", choices=["table", "json"], default="table")
    info.set_defaults(run=cmd_info)

    read = sub.add_parser("read", help="the events of one stream")
    read.add_argument("lake")
    read.add_argument("stream")
    read.add_argument("--as-of", help="system time: what had been recorded then")
    read.add_argument("--position", type=int, help="log position to read as of")
    read.add_argument("--from-version", type=int)
    read.add_argument("--format", choices=["table", "csv", "json"], default="table")
    read.add_argument(
        "--columns",
        default="global_position,version,event_type,occurred_at,recorded_at,data,metadata",
        help="comma-separated columns ('' for all)",
    )
    read.set_defaults(run=cmd_read)

    append = sub.add_parser("append", help="append one event to a stream")
    append.add_argument("lake")
    append.add_argument("stream")
    append.add_argument("event_type")
    append.add_argument("--data", default="{}", help="JSON object")
    append.add_argument("--metadata", default="{}", help="JSON object (actor, reason, ...)")
    append.add_argument("--occurred-at", help="valid time, ISO 8601 with a zone")
    append.add_argument("--expected-version", help="any, no_stream, stream_exists or a number")
    append.add_argument("--create", action="store_true", help="create the lake if missing")
    append.set_defaults(run=cmd_append)

    def timed(command: argparse.ArgumentParser, *, position: bool = True) -> None:
        command.add_argument("lake")
        command.add_argument("--as-of", help="system time: answer with what had been recorded then")
        command.add_argument("--valid-at", help="valid time: answer with what had happened by then")
        if position:
            command.add_argument("--position", type=int, help="log position to answer at")
        command.add_argument(
            "--format", choices=["table", "csv", "json", "parquet"], default="table"
        )
        command.add_argument("--output", help="write to this file instead of the screen")

    sql = sub.add_parser("sql", help="run SQL over the lake's `events` (cut by --as-of/--valid-at)")
    timed(sql)
    sql.add_argument("query")
    sql.add_argument(
        "--projection", action="append", help="also register this projection's views and macros"
    )
    sql.set_defaults(run=cmd_sql)

    state = sub.add_parser("state", help="a projection's state, now or at a cut")
    timed(state)
    state.add_argument("projection")
    state.add_argument("--key", help="only this stream")
    state.set_defaults(run=cmd_state)

    history = sub.add_parser("history", help="a projection's state history, or one entity's trail")
    timed(history)
    history.add_argument("projection")
    history.add_argument("--key", help="only this stream")
    history.add_argument("--axis", choices=["system", "valid"], default="system")
    history.add_argument(
        "--trail",
        action="store_true",
        help="each event: who, why, both times, before and after (needs --key)",
    )
    history.set_defaults(run=cmd_history)

    materialize = sub.add_parser(
        "materialize",
        help="keep a projection's state in the lake (refreshed incrementally, with checkpoints "
        "that esa state --as-of then answers from)",
    )
    materialize.add_argument("lake")
    materialize.add_argument("projection")
    materialize.add_argument("--rebuild", action="store_true", help="recompute from the whole log")
    materialize.add_argument("--checkpoint-every", type=int, default=1_000_000, metavar="EVENTS")
    materialize.set_defaults(run=cmd_materialize)

    chart = sub.add_parser(
        "chart", help="draw a chart of the lake to .html (offline, interactive), .svg or .png"
    )
    chart.add_argument("lake")
    chart.add_argument("kind", choices=CHARTS)
    chart.add_argument("--output", required=True, help="the file to write: .html, .svg or .png")
    chart.add_argument("--projection", default="account_balances")
    chart.add_argument("--field", help="the projection field (default: balance, or status)")
    chart.add_argument("--key", action="append", help="an entity (repeat for several)")
    chart.add_argument("--axis", choices=["system", "valid"], default="system")
    chart.add_argument("--by", choices=["hour", "week"], default="hour", help="heatmap grouping")
    chart.add_argument("--every", choices=["day", "week", "month"], default="week")
    chart.add_argument("--correlation", help="the correlation id of a causation tree")
    chart.add_argument("--cut", help="the as-of view's starting cut (a time)")
    chart.add_argument("--as-of", help="system time: draw what had been recorded then")
    chart.add_argument("--valid-at", help="valid time: draw what had happened by then")
    chart.set_defaults(run=cmd_chart)

    diff = sub.add_parser("diff", help="what changed in a projection between two times")
    timed(diff, position=False)
    diff.add_argument("projection")
    diff.add_argument("since_time", metavar="FROM")
    diff.add_argument("until_time", metavar="TO")
    diff.add_argument("--axis", choices=["system", "valid"], default="system")
    diff.set_defaults(run=cmd_diff)

    since = sub.add_parser("since", help="the keys a projection changed after a log position")
    timed(since)
    since.add_argument("projection")
    since.add_argument("since_position", type=int, metavar="POSITION")
    since.set_defaults(run=cmd_since)

    verify = sub.add_parser(
        "verify",
        help="prove nothing was altered (each file against its committed SHA-256, or every "
        "event's hash when anything differs); say what was altered and where",
    )
    verify.add_argument("lake")
    verify.add_argument(
        "--deep",
        action="store_true",
        help="recompute every event's hash even when every file matches its digest",
    )
    verify.add_argument("--against", help="a checkpoint file the log must still extend")
    verify.add_argument("--key", help="the key file that signed the checkpoint")
    verify.add_argument("--format", choices=["table", "json"], default="table")
    verify.set_defaults(run=cmd_verify)

    report = sub.add_parser("report", help="an audit report (HTML) or extracts (CSV, Parquet)")
    report.add_argument("lake")
    report.add_argument("--entity", help="one stream id")
    report.add_argument("--actor", help="one actor")
    report.add_argument("--correlation", help="one correlation id")
    report.add_argument("--period", nargs=2, metavar=("FROM", "TO"), help="system time [FROM, TO)")
    report.add_argument("--position", type=int, help="pin to this log position (default: the head)")
    report.add_argument("--format", choices=["html", "pdf", "csv", "parquet"], default="html")
    report.add_argument("--output", required=True, help="the report file (extracts: the base name)")
    report.add_argument("--against", help="a checkpoint to include and check")
    report.add_argument("--key", help="the checkpoint's key file")
    report.set_defaults(run=cmd_report)

    checkpoint = sub.add_parser("checkpoint", help="export a signed checkpoint of the log")
    checkpoint.add_argument("lake")
    checkpoint.add_argument("--key", required=True, help="key file (make one with esa keygen)")
    checkpoint.add_argument("--position", type=int, help="default: the head")
    checkpoint.add_argument("--output", help="also write it to this file")
    checkpoint.set_defaults(run=cmd_checkpoint)

    keygen = sub.add_parser("keygen", help="make a new random key for signing checkpoints")
    keygen.add_argument("file")
    keygen.set_defaults(run=cmd_keygen)

    compact = sub.add_parser("compact", help="cluster small files by stream")
    compact.add_argument("lake")
    compact.add_argument("--vacuum-after", type=float, default=3600.0, help="seconds")
    compact.set_defaults(run=cmd_compact)
    return root


def _show_warning(message: Warning | str, category: type[Warning], *rest: Any, **_: Any) -> None:
    """esanalytics' warnings as the CLI says things (problem, then Hint), not as a Python
    warning line with a file name."""
    from rich.markup import escape

    from esanalytics.exceptions import EsaWarning

    console = _err_console()
    if isinstance(message, EsaWarning):
        console.print(f"[yellow]warning:[/yellow] {escape(message.problem)}")
        if message.hint:
            console.print(f"Hint: {message.hint}", markup=False)
        return
    console.print(f"warning: {category.__name__}: {message}", markup=False)


def main(argv: Sequence[str] | None = None) -> int:
    # Altair imports jsonschema, which imports rfc3987_syntax when it is installed (Jupyter
    # brings it) and builds a grammar for about a second on every start. The CLI checks no
    # IRIs, so its own process goes without (jsonschema skips that one format check).
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    args = parser().parse_args(argv)
    try:
        lake, output = getattr(args, "lake", None), getattr(args, "output", None)
        if lake and output and _inside(Path(lake), output):
            raise esa.ValidationError(
                f"--output {output} is inside the lake. Nothing was run.",
                hint="a lake's files are written only by esa, so that its commit log and "
                "digests stay true; write the output to a path outside the lake folder.",
            )
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            code: int = args.run(args)
        return code
    except esa.EsaError as error:
        from rich.markup import escape

        console = _err_console()
        console.print(f"[red]error:[/red] {escape(error.problem)}")
        if error.hint:
            console.print(f"Hint: {error.hint}", markup=False)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into head
        return EXIT_OK
    except OSError as error:  # writing an output file: a full disk, no permission
        if error.errno not in _STORAGE_ERRNOS:
            raise
        from rich.markup import escape

        console = _err_console()
        where = escape(str(error.filename or "a file"))
        console.print(
            f"[red]error:[/red] could not write {where}: {escape(error.strerror or str(error))}"
        )
        console.print(
            "Hint: free space on that disk, or write where you have permission; "
            "then run the command again.",
            markup=False,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
