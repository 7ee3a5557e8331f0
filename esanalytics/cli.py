"""The ``esa`` command: a thin layer over the public API (parsing, output, exit codes)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import os
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import esanalytics as esa

if TYPE_CHECKING:
    import pyarrow as pa

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


@contextmanager
def _stage(label: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the elapsed time on stderr for a step of unknown length (quiet when
    stderr is not a terminal); the callable renames the step as it moves on."""
    from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        "[progress.description]{task.description}",
        TimeElapsedColumn(),
        console=_err_console(),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None)
        yield lambda text: bar.update(task, description=text)


def _err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def build_sample(
    path: Path, *, events: int, seed: int, fast: bool = False, quiet: bool = False
) -> esa.EventStore:
    """Generate the sample lake at ``path`` (in chunks, with progress) and compact it.

    By default every event is decided by the domain's deciders from the sample's commands
    (the real write path, in batch mode); ``fast`` ingests the vectorized events directly,
    which a test holds equal to what the deciders decide. A fast sample above
    :data:`~esanalytics.sample.SHARD_EVENTS` is compacted (and the replaced files deleted:
    nobody reads the new lake yet) after each shard's worth of events, so the disk never holds
    its events twice."""
    from datetime import timedelta

    from esanalytics.domain import handle_batch
    from esanalytics.sample import DECIDERS, SHARD_EVENTS, SampleSpec, commands, sample_tables

    store = esa.open(path, create=True)
    total, chunks = sample_tables(SampleSpec(events=events, seed=seed))
    started = time.perf_counter()
    how = "ingesting" if fast else "deciding"
    with _progress(f"{how} {total:,} events", total) as advance:
        if fast:
            since_compaction = 0
            for table in chunks:
                store.ingest(table, progress=advance)
                since_compaction += table.num_rows
                if total > SHARD_EVENTS and since_compaction >= SHARD_EVENTS:
                    store.compact()
                    store.vacuum(older_than=timedelta(0))
                    since_compaction = 0
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


def _lake_path(lake: str) -> Path | str:
    """A lake as named on the command line: a folder, or a URL on object storage (kept as
    text: ``Path`` would fold ``s3://`` into ``s3:/``)."""
    return lake if lake.startswith("s3://") else Path(lake)


def _local_only(lake: str, verb: str) -> None:
    """Refuse a verb that builds a lake folder when given a lake on object storage."""
    if lake.startswith("s3://"):
        raise esa.ValidationError(
            f"`esa {verb}` builds a lake on local disk; {lake} is on object storage.",
            hint=f"build it in a folder (esa {verb} ./lake ...) and copy the folder to "
            "object storage, or append to the lake there with `esa append`/`esa import`.",
        )


def cmd_demo(args: argparse.Namespace) -> int:
    _local_only(args.lake, "demo")
    path = Path(args.lake)
    if not (path / "_esa" / "lake.json").exists():
        build_sample(path, events=args.events, seed=args.seed, fast=args.fast)
    store = esa.open(path)
    console = _console()
    if any(entry.typed is None for entry in store.files()):
        # A sample lake built before typed twins: compaction gives it them (events unchanged),
        # so the README's events_<category> examples answer on it too.
        console.print(f"compacting {path} once, to give its files typed twins ...")
        store.compact()
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
        raise esa.ValidationError(
            f"The stream {stream} has no events in {path}.",
            hint="pick one with --stream, e.g. --stream account-42 (esa info lists the categories).",
        )
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
    esa_ = _esa_command()
    console.print(
        f'\nTry: {esa_} sql {path} "SELECT event_type, count(*) FROM events GROUP BY ALL" '
        f"--as-of {cut[:10]}\n     {esa_} history {path} account_balances --key {stream} --trail"
        f"\n     {esa_} verify {path}",
        soft_wrap=True,
    )
    return EXIT_OK


def _esa_command() -> str:
    """How to run esa from this shell: `esa` when it is on the PATH, else through uv in a
    checkout (as the README's set-up runs it), else through this Python. Under `uv run`
    the PATH holds .venv/bin only for this process, not for the shell that ran it."""
    import shutil

    if shutil.which("esa") and not os.environ.get("UV_RUN_RECURSION_DEPTH"):
        return "esa"
    if Path("uv.lock").exists():
        return "python3 -m uv run esa"
    return f"{sys.executable} -m esanalytics.cli"


def cmd_generate(args: argparse.Namespace) -> int:
    _local_only(args.lake, "generate")
    path = Path(args.lake)
    if path.exists() and any(path.iterdir()):
        _err_console().print(
            f"[red]{path} is not empty.[/red]\nHint: pick a new folder, or delete this one first."
        )
        return EXIT_ERROR
    build_sample(path, events=args.events, seed=args.seed, fast=args.fast)
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    path = _lake_path(args.lake)
    with contextlib.suppress(esa.LakeNotFoundError):
        store = esa.open(path)
        print(f"{path} is already a lake ({store.head:,} events); nothing was changed.")
        return EXIT_OK
    esa.open(path, create=True)
    print(
        f"made an empty lake at {path}\n"
        f"Next: esa append {path} STREAM TYPE --data JSON, or ingest a table from Python "
        f"(esanalytics.open({str(path)!r}).ingest(...))."
    )
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    store = esa.open(args.lake)
    inventory = store.inventory()
    imports = store.cursors()
    files = store.files()
    twins = {"files": len(files), "with_typed_twin": sum(e.typed is not None for e in files)}
    if args.format == "json":
        whole = _inventory_dict(inventory) | {"imports": imports, "twins": twins}
        print(json.dumps(whole, indent=2, default=str))
        return EXIT_OK
    console = _console()
    console.print(str(inventory))
    console.print(
        "event types " + ", ".join(f"{k} ({v:,})" for k, v in inventory.event_types.items())
    )
    if files:  # typed copies of the payloads that queries read (`esa compact` adds the rest)
        console.print(
            f"typed twins {twins['with_typed_twin']:,} of {len(files):,} files"
            + ("" if twins["with_typed_twin"] == len(files) else " (`esa compact` adds the rest)"),
            markup=False,
        )
    for name, cursor in sorted(imports.items()):
        console.print(
            f"import {name!r} ({cursor.get('kind')}) from {cursor.get('source')}: "
            f"up to {_cursor_place(cursor.get('at') or {})}",
            markup=False,
        )
    return EXIT_OK


def _cursor_place(at: dict[str, Any]) -> str:
    """Where an import's cursor stands, in the source's own words."""
    if "line" in at:
        return f"{at.get('file')} line {at['line']:,} (byte {at.get('offset', 0):,})"
    if "row" in at:
        return f"{at.get('file')} row {at['row']:,}"
    if "table" in at and "position" in at:  # a SQL event store (its gaps: up to 1000)
        gaps = len(at.get("gaps") or [])
        looked = f", {gaps:,} gap{'' if gaps == 1 else 's'} below it looked in" if gaps else ""
        return f"{at['table']} position {at['position']:,}{looked}"
    if "offsets" in at:  # a Kafka import: each partition's next offset (all: --format json)
        return "; ".join(
            f"{topic} next offsets "
            + ", ".join(f"{p}:{o:,}" for p, o in sorted(parts.items(), key=lambda x: int(x[0]))[:8])
            + (f" ... ({len(parts)} partitions)" if len(parts) > 8 else "")
            for topic, parts in sorted(at["offsets"].items())
        )
    return json.dumps(at)


def _inventory_dict(inventory: esa.Inventory) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(inventory)


def cmd_read(args: argparse.Namespace) -> int:
    store = esa.open(args.lake)
    session = _session(args) if args.as_of is not None else None  # warns of a future cut
    events = store.read_stream(
        args.stream, as_of=args.as_of, position=args.position, from_version=args.from_version
    )
    if not len(events) and not args.from_version:
        from esanalytics.audit.trail import Scope, empty_scope_error

        raise empty_scope_error(session or _session(args), Scope("entity", args.stream))
    table = events.to_arrow()
    if args.limit and args.format != "table":
        table = table.slice(0, args.limit)
    _emit(table, args.format, args.columns, args.limit)
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


def _output(path: str) -> Path:
    """The file to write, its folder made if missing (every verb that writes does so)."""
    target = Path(path)
    if target.is_dir():
        raise esa.ValidationError(
            f"{target} is a folder; the output is a file.",
            hint=f"name a file inside it, e.g. {target / 'NAME'} with the format's suffix.",
        )
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise esa.ValidationError(
            f"Cannot make the folder {target.parent} for {target}: {error.strerror}.",
            hint="choose an --output in a folder you can write to.",
        ) from None
    return target


def _read_checkpoint(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        raise esa.ValidationError(
            f"{path} is not a checkpoint file.",
            hint="export one with `esa checkpoint LAKE --key KEYFILE --output FILE`.",
        ) from None


def _emit_relation(relation: Any, args: argparse.Namespace) -> None:
    import pyarrow as pa

    table = relation if isinstance(relation, pa.Table) else relation.to_arrow_table()
    if args.limit and args.format != "table":
        table = table.slice(0, args.limit)
    if args.format == "parquet":
        import pyarrow.parquet as pq

        if not args.output:
            raise esa.ValidationError(
                "Parquet output needs a file.", hint="add --output FILE.parquet."
            )
        from esanalytics.store._atomic import replacing

        with replacing(_output(args.output)) as tmp:
            pq.write_table(table, tmp)
        print(json.dumps({"rows": table.num_rows, "output": args.output}))
        return
    if args.output:
        from esanalytics.store._atomic import replacing

        # (the file is closed before it is synced and renamed into place)
        with (
            replacing(_output(args.output)) as tmp,
            open(tmp, "w") as sink,
            contextlib.redirect_stdout(sink),
        ):
            _emit(table, args.format, None, args.limit)
        return
    _emit(table, args.format, None, args.limit)


def _fingerprint(lake: Path | str) -> dict[str, tuple[int, int, int]]:
    """Size, modification time and inode of every file in the lake (none for a lake on object
    storage: the textual check stands alone there)."""
    stamps: dict[str, tuple[int, int, int]] = {}
    if isinstance(lake, str):
        return stamps
    for folder, _, names in os.walk(lake):
        for name in names:
            with contextlib.suppress(OSError):
                stat = os.stat(os.path.join(folder, name))
                stamps[os.path.join(folder, name)] = (stat.st_size, stat.st_mtime_ns, stat.st_ino)
    return stamps


def _projection(spec: str, session: Any = None, *, reducer: bool = False) -> Any:
    """The projection a user named: a shipped one, or their own file or module. A .sql
    projection's fields are read from its query (on ``session``); ``reducer`` refuses the
    forms that cannot answer history, trail or materialize."""
    from esanalytics.catalog import load
    from esanalytics.projections import Projection, SqlProjection

    chosen = load(spec)
    if reducer and not isinstance(chosen, Projection):
        raise esa.ValidationError(
            f"{spec} is a {type(chosen).__name__}, which answers state, diff and since only.",
            hint="history, trails, materializing and charts need a reducer Projection "
            "(esanalytics.projections.Projection).",
        )
    if isinstance(chosen, SqlProjection) and not chosen.columns and session is not None:
        relation = session.sql(f"SELECT * FROM ({chosen.state_sql(session)}) LIMIT 0")
        if "key" not in relation.columns:
            raise esa.ValidationError(
                f"The query of {spec} has no key column.",
                hint="select the entity as key, e.g. SELECT stream_id AS key, ... FROM events.",
            )
        chosen = dataclasses.replace(chosen, columns=[c for c in relation.columns if c != "key"])
    return chosen


def cmd_sql(args: argparse.Namespace) -> int:
    from esanalytics.catalog import PROJECTIONS
    from esanalytics.projections import Projection

    if not args.query.strip():
        raise esa.ValidationError(
            "The query is empty.",
            hint=f'write one in quotes, e.g. esa sql {args.lake} "SELECT count(*) FROM events".',
        )
    if args.engine == "spark":
        return _spark_sql(args)
    session = _session(args)
    for name in [*PROJECTIONS, *(args.projection or [])]:
        chosen = _projection(name, session)
        if isinstance(chosen, Projection):
            chosen.register(session)
        else:  # its state at the session's cut, as a view named after it
            session.con.execute(
                f'CREATE OR REPLACE VIEW "{chosen.name}" AS {chosen.state_sql(session)}'
            )
    lake = _lake_path(args.lake)
    import duckdb

    from esanalytics.engine import lake_targets, query_error

    try:
        targets = lake_targets(session.con, args.query, lake)
    except duckdb.Error as error:
        raise query_error(error) or esa.ValidationError(
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
    try:  # a query error is explained by main(), as for every verb
        _emit_relation(session.sql(args.query), args)
    finally:
        _check_untouched(args.lake, lake, before)
    return EXIT_OK


def _spark_session(args: argparse.Namespace) -> Any:
    """The lake at the command's cut on Spark (the running configuration's master, else
    every core of this machine), Spark's own logging kept to fatal errors."""
    from esanalytics.spark import Session, spark_session

    spark = spark_session()
    spark.sparkContext.setLogLevel("FATAL")
    return Session(
        esa.open(args.lake),
        spark=spark,
        as_of=getattr(args, "as_of", None),
        valid_at=getattr(args, "valid_at", None),
        position=getattr(args, "position", None),
    )


def _spark_sql(args: argparse.Namespace) -> int:
    """`esa sql --engine spark`: the query (DuckDB's SQL, translated) on Spark, with the
    shipped projections and --projection ones registered as for DuckDB."""
    from esanalytics.catalog import PROJECTIONS

    session = _spark_session(args)
    for name in [*PROJECTIONS, *(args.projection or [])]:
        session.register(_projection(name, session))
    _emit_relation(session.arrow(args.query), args)
    return EXIT_OK


def _check_untouched(name: str, lake: Path | str, before: dict[str, tuple[int, int, int]]) -> None:
    """If anything in the lake changed while a query ran, the lake must still verify: a
    query that wrote inside it by a route the textual check cannot see is named at once."""
    after = _fingerprint(lake)
    changed = sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
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


def _materialized(args: argparse.Namespace) -> Any:
    """The lake's materialized view of the projection, when there is a current one and the
    question is on system time (its checkpoints answer those); else None."""
    from esanalytics.materialized import MaterializedProjection
    from esanalytics.projections import Projection

    chosen = _projection(args.projection)
    if getattr(args, "valid_at", None) is not None or not isinstance(chosen, Projection):
        return None
    if args.lake.startswith("s3://"):
        return None  # (a lake on object storage keeps no materialized projections)
    view = MaterializedProjection(esa.open(args.lake), chosen)
    current = view.current()
    if not current or current["version"] != view.projection.version:
        return None
    _err_console().print(f"answered from the materialized projection in {view.folder}")
    return view


def cmd_state(args: argparse.Namespace) -> int:
    if args.engine == "spark":
        spark = _spark_session(args)
        table = spark.arrow(spark.state(_projection(args.projection, spark)))
        if args.key:
            import pyarrow.compute as pc

            table = table.filter(pc.field("key") == args.key)
            if not table.num_rows:
                from esanalytics.exceptions import EmptyScopeError

                raise EmptyScopeError(
                    f"{args.projection} has no state for the key {args.key!r} at this cut.",
                    hint="check the key, or ask at a later --as-of, --valid-at or --position.",
                )
        _emit_relation(table, args)
        return EXIT_OK
    view = _materialized(args)
    if view is not None:  # the same answer, from the nearest checkpoint
        session = _session(args) if args.as_of is not None else None  # warns of a future cut
        table = view.state(as_of=args.as_of, position=args.position)
        if args.key:
            import pyarrow.compute as pc

            table = table.filter(pc.field("key") == args.key)
            if not table.num_rows:
                _require_key(session or _session(args), view.projection, args.key, None)
        _emit_relation(table, args)
        return EXIT_OK
    session = _session(args)
    proj = _projection(args.projection, session)
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
    from esanalytics.materialized import MaterializedProjection

    view = MaterializedProjection(
        esa.open(args.lake),
        _projection(args.projection, reducer=True),
        checkpoint_every=args.checkpoint_every,
        max_checkpoints=args.max_checkpoints,
    )
    done = view.refresh(rebuild=args.rebuild)
    print(json.dumps({**dataclasses.asdict(done), "checkpoints_kept": len(view.checkpoints())}))
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    if args.trail and not args.key:
        raise esa.ValidationError(
            "--trail needs --key: a trail is one entity's events.",
            hint="name the entity, e.g. --key account-42.",
        )
    session = _session(args)
    chosen = _projection(args.projection, reducer=True)
    if args.trail and args.changes_of:
        raise esa.ValidationError(
            "--trail and --changes-of ask two things: a trail has a row per event.",
            hint="leave out one of them, e.g. --changes-of status without --trail.",
        )
    if args.trail:
        relation = chosen.trail(session, args.key)
    else:
        fields = None if args.changes_of is None else args.changes_of.split(",")
        relation = chosen.history(session, axis=args.axis, key=args.key, changes_of=fields)
    if args.key:
        _require_key(session, chosen, args.key, relation)
    _emit_relation(relation, args)
    return EXIT_OK


def cmd_diff(args: argparse.Namespace) -> int:
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
    session = _session(args)
    relation = _projection(args.projection, session).diff(
        session, {axis: args.since_time}, {axis: args.until_time}
    )
    _emit_relation(relation, args)
    return EXIT_OK


def cmd_since(args: argparse.Namespace) -> int:
    session = _session(args)
    chosen = _projection(args.projection, session)
    if args.since_position > session.position:  # empty output would read as "no changes"
        raise esa.ValidationError(
            f"Position {args.since_position:,} is past the lake's head ({session.position:,}): "
            "nothing can have changed since then.",
            hint=f"give a position up to {session.position:,}; `esa info {args.lake}` shows "
            "the head.",
        )
    _emit_relation(chosen.since(session, args.since_position), args)
    return EXIT_OK


CHARTS = (
    "evolution", "timeline", "intervals", "heatmap", "bitemporal", "as-of", "tree", "population",
)  # fmt: skip


def cmd_chart(args: argparse.Namespace) -> int:
    from esanalytics import viz

    if Path(args.output).suffix.lower() not in (".html", ".svg", ".png"):
        raise esa.ValidationError(
            f"Cannot save a chart as {Path(args.output).suffix or 'a file without a suffix'}.",
            hint="name the --output file .html, .svg or .png.",
        )
    session = _session(args)
    proj = _projection(args.projection, reducer=True)
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
    written = viz.save(chart, _output(args.output))
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
        against = _read_checkpoint(args.against)
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
    checkpoint = _read_checkpoint(args.against) if args.against else None
    key = read_key(args.key) if args.key else None
    with _stage("report: reading and checking the events in scope"):
        package = collect(
            esa.open(args.lake), scope, position=args.position, checkpoint=checkpoint, key=key
        )
    if args.format == "html":
        from esanalytics.report import render_html

        with _stage("report: drawing the charts") as step:
            _write_whole(_output(args.output), render_html(package, progress=step))
        written = [args.output]
    elif args.format == "pdf":
        from esanalytics.report import render_pdf

        with _stage("report: drawing the charts") as step:
            _write_whole(_output(args.output), render_pdf(package, progress=step))
        written = [args.output]
    else:
        from esanalytics.report import write_extract

        base = _output(args.output)
        trail_file = base.with_name(base.stem + "-trail." + args.format)
        exceptions_file = base.with_name(base.stem + "-exceptions." + args.format)
        sums = [write_extract(package.trail, trail_file, fmt=args.format),
                write_extract(package.exceptions, exceptions_file, fmt=args.format)]  # fmt: skip
        written = [str(trail_file), str(exceptions_file), *map(str, sums)]
        _err_console().print(
            f"a report is two tables: wrote {trail_file} and {exceptions_file}, "
            "each with a .sha256 beside it",
            markup=False,
        )
    print(json.dumps({"position": package.position, "events": package.trail.num_rows,
                      "exceptions": package.exceptions.num_rows, "integrity_ok": package.integrity_ok,
                      "complete": package.complete, "written": written}))  # fmt: skip
    return EXIT_OK if package.integrity_ok else EXIT_ERROR


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from esanalytics.audit import make_checkpoint, read_key

    checkpoint = make_checkpoint(esa.open(args.lake), read_key(args.key), position=args.position)
    text = json.dumps(checkpoint, indent=2)
    if args.output:
        _write_whole(_output(args.output), text + "\n")
    print(text)
    return EXIT_OK


def cmd_keygen(args: argparse.Namespace) -> int:
    from esanalytics.audit import make_key

    try:
        path = make_key(_output(args.file))
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


def cmd_import(args: argparse.Namespace) -> int:
    import signal

    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeRemainingColumn

    mapping = esa.ImportMapping.parse(
        args.map or [], occurred_at=args.occurred_at, recorded_at=args.recorded_at,
        zone=args.timezone,
    )  # fmt: skip
    stop = _SignalStop()
    interrupted: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        if interrupted:  # a second Ctrl-C: stop now (the store is safe at any instant)
            raise KeyboardInterrupt
        interrupted.append(signum)
        stop.asked = True  # the batch being committed finishes; then the import stops

    live: list[Any] = []  # the progress display, once it runs

    def show_mapping(used: Any) -> None:
        # Printed above the progress bar (on stderr, where the bar is), as soon as the
        # mapping is known; the summary on stdout repeats it in one line.
        console = live[0].console if live else _err_console()
        for line in used.shown():
            console.print(line, markup=False)

    old = signal.signal(signal.SIGINT, on_signal)
    try:
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            TaskProgressColumn(),
            TimeRemainingColumn(),
            "{task.fields[rate]}",
            console=_err_console(),
            transient=True,
        ) as bar:
            live.append(bar)
            task = bar.add_task("importing", total=None, rate="")
            started = time.perf_counter()

            def advance(done: int, total: int | None) -> None:
                bar.update(task, completed=done, total=total)

            def batch(summary: Any) -> None:
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.update(
                    task,
                    description=f"importing {summary.name}: {summary.events:,} events",
                    rate="" if args.follow else f"{summary.events / elapsed:,.0f} events/s",
                )
                if args.follow and summary.batches:
                    bar.console.print(
                        f"committed: {summary.events:,} events so far, "
                        f"{summary.rejected:,} rejected"
                    )

            try:
                summary = esa.import_events(
                    args.lake, args.source, name=args.name, mapping=mapping,
                    on_error=args.on_error, schema=args.schema, follow=args.follow,
                    create=args.create,
                    poll_seconds=args.poll, stop=stop, progress=advance,
                    on_mapping=show_mapping, on_batch=batch,
                )  # fmt: skip
            except esa.LakeNotFoundError as error:
                error.cli_hint = (  # type: ignore[attr-defined]
                    f"add --create to make a new lake at {args.lake} and import into it."
                )
                raise
    finally:
        signal.signal(signal.SIGINT, old)
    if args.format == "json":
        print(json.dumps(_summary_dict(summary), indent=2))
    else:
        print(str(summary))
        if interrupted:
            print(
                "stopped by Ctrl-C after the last committed batch; run the same command to go on."
            )
    return EXIT_OK


class _SignalStop(threading.Event):
    """A stop flag a signal handler may set: a plain attribute, no lock (``Event.set`` takes
    a lock the interrupted code may hold, and would wait for it forever)."""

    asked = False

    def is_set(self) -> bool:
        return self.asked or super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        end = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while not self.is_set() and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))
        return self.is_set()


def _summary_dict(summary: Any) -> dict[str, Any]:
    out = {
        "name": summary.name,
        "source": summary.source,
        "events": summary.events,
        "already_in_lake": summary.already,
        "rejected": summary.rejected,
        "commits": summary.batches,
        "streams": summary.streams,
        "first_occurred": summary.first_occurred,
        "last_occurred": summary.last_occurred,
        "head": summary.head,
        "seconds": round(summary.seconds, 3),
        "rejects_file": summary.rejects_path,
        "mapping": summary.mapping.to_json(),
    }
    plain: dict[str, Any] = json.loads(json.dumps(out, default=str))
    return plain


def cmd_compact(args: argparse.Namespace) -> int:
    store = esa.open(args.lake)
    with _progress("compacting", store.head) as advance:
        done = store.compact(progress=advance)
    removed = store.vacuum(older_than=_seconds(args.vacuum_after))
    print(json.dumps({**done, "vacuumed": removed}))
    return EXIT_OK


def cmd_vacuum(args: argparse.Namespace) -> int:
    """`esa vacuum`: delete the files compaction replaced (and, on object storage, the files
    no commit names) once older than --older-than seconds."""
    store = esa.open(args.lake)
    removed = store.vacuum(older_than=_seconds(args.older_than))
    print(json.dumps({"vacuumed": removed}))
    return EXIT_OK


def cmd_copy(args: argparse.Namespace) -> int:
    """`esa copy LAKE s3://bucket/prefix`: the lake, byte for byte, on object storage (its
    commit log as one object per line at the same offsets), taken under the source's writer
    lock so no commit or vacuum lands midway, then verified where it now lives."""
    import time

    from esanalytics.audit import verify
    from esanalytics.store.layout import WRITER_LOCK
    from esanalytics.store.s3 import S3FS, copy_lake, is_s3_url

    if not is_s3_url(args.target):
        raise esa.ValidationError(
            f"esa copy writes a lake to object storage, and {args.target} is not an s3:// URL.",
            hint="name an empty prefix, such as s3://bucket/lake (options from the AWS_* "
            "environment); a local copy of a lake folder is `cp -a LAKE NEW`.",
        )
    source = esa.open(args.lake)
    if not source.fs.local:
        raise esa.ValidationError(
            f"esa copy reads a lake folder, and {args.lake} is on object storage.",
            hint="copy between buckets with your store's own tools (aws s3 sync): the "
            "objects are the lake.",
        )
    started = time.perf_counter()
    with source.fs.lock(WRITER_LOCK):
        head = source.refresh()
        objects = copy_lake(Path(source.path), S3FS(args.target))
    result = verify(esa.open(args.target))
    print(
        json.dumps(
            {
                "target": args.target,
                "objects": objects,
                "events": head,
                "verified": result.ok,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )
    if not result.ok:
        _console().print(str(result), markup=False)
    return EXIT_OK if result.ok else EXIT_ERROR


def _seconds(value: float) -> Any:
    from datetime import timedelta

    return timedelta(seconds=value)


def _emit(table: Any, fmt: str, columns: str | None, limit: int | None = None) -> None:
    if columns:
        chosen = [c.strip() for c in columns.split(",")]
        unknown = [c for c in chosen if c not in table.column_names]
        if unknown:
            raise esa.ValidationError(
                f"There is no column {unknown[0]!r} to show.",
                hint=f"--columns takes some of {','.join(table.column_names)} ('' for all).",
            )
        table = table.select(chosen)
    if fmt == "json":
        for row in table.to_pylist():
            print(json.dumps(row, default=str))
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        sink = sys.stdout.buffer
        pacsv.write_csv(table, sink)
        sink.flush()
    else:
        _print_table(table, limit)


def _print_table(table: pa.Table, limit: int | None) -> None:
    """Every verb's terminal table: fitted to the terminal's width, its first rows (``limit``;
    by default what fits on the screen), then a count and how to see the rest."""
    import shutil

    from esanalytics._terminal import default_limit, render

    size = shutil.get_terminal_size()
    rows = default_limit(size.lines) if limit is None else limit
    print("\n".join(render(table, width=max(size.columns, 20), limit=rows)))


# Help texts. The shipped projections are named here rather than read from the catalog, which
# would import DuckDB for every `esa --help` (a test holds the two lists equal).
USER_PROJECTIONS = (
    "a Python file (my_projection.py, or my_projection.py:NAME when it holds several), "
    "a module (package.module:NAME) or a .sql file (a query over events with a key column)"
)
LAKE = (
    "the lake's folder (made by esa init, esa generate or esa demo), or a lake on object "
    "storage, s3://bucket/prefix (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, "
    "AWS_SECRET_ACCESS_KEY, AWS_REGION)"
)
LAKE_NEW = "the folder to make the lake in (new or empty)"
PROJECTION_HELP = (
    "a shipped projection (account_balances, order_status), or your own: " + USER_PROJECTIONS
)


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors end with a Hint like every other error."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        sys.stderr.write(
            f"{self.prog}: error: {message}\nHint: `{self.prog} --help` describes every "
            "argument and option.\n"
        )
        sys.exit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="esa", description="Inspect event logs kept as Parquet lakes.")
    root.add_argument("--version", action="version", version=f"esa {esa.__version__}")
    root.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="the most memory DuckDB may use, e.g. 4GB (default: ESA_MEMORY_LIMIT, else "
        "80%% of the machine); what does not fit spills to disk",
    )
    root.add_argument(
        "--temp-dir",
        metavar="DIR",
        help="where DuckDB spills (default: ESA_TEMP_DIR, else a folder of its own in the "
        "system's temporary folder, removed at exit)",
    )
    root.add_argument(
        "--max-temp-size",
        metavar="SIZE",
        help="the most DuckDB may spill, e.g. 20GB (default: ESA_MAX_TEMP_SIZE, else 90%% "
        "of the free disk)",
    )
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

    def limit_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--limit",
            type=int,
            metavar="N",
            help="at most N rows (0: all); tables show what fits on the screen unless told, "
            "csv and json every row",
        )

    demo = sub.add_parser("demo", help="build (once) and show the sample lake")
    demo.add_argument("--lake", default=str(DEFAULT_LAKE))
    sample_options(demo, DEFAULT_EVENTS)
    demo.add_argument("--stream", default="account-42")
    demo.set_defaults(run=cmd_demo)

    init = sub.add_parser("init", help="make a new, empty lake")
    init.add_argument("lake", help=LAKE_NEW)
    init.set_defaults(run=cmd_init)

    generate = sub.add_parser("generate", help="generate a sample lake")
    generate.add_argument("lake", help=LAKE_NEW)
    sample_options(generate, 1_000_000)
    generate.set_defaults(run=cmd_generate)

    info = sub.add_parser("info", help="what is in a lake")
    info.add_argument("lake", help=LAKE)
    info.add_argument("--format", choices=["table", "json"], default="table")
    info.set_defaults(run=cmd_info)

    read = sub.add_parser("read", help="the events of one stream")
    read.add_argument("lake", help=LAKE)
    read.add_argument("stream", help="the stream id, e.g. account-42")
    read.add_argument("--as-of", help="system time: what had been recorded then")
    read.add_argument("--position", type=int, help="log position to read as of")
    read.add_argument("--from-version", type=int)
    read.add_argument("--format", choices=["table", "csv", "json"], default="table")
    read.add_argument(
        "--columns",
        default="global_position,version,event_type,occurred_at,recorded_at,data,metadata",
        help="comma-separated columns ('' for all)",
    )
    limit_option(read)
    read.set_defaults(run=cmd_read)

    append = sub.add_parser("append", help="append one event to a stream")
    append.add_argument("lake", help=LAKE + " (with --create: made if missing)")
    append.add_argument("stream", help="the stream id, e.g. account-42 (category-id)")
    append.add_argument("event_type", help="a past-tense name, e.g. MoneyDeposited")
    append.add_argument("--data", default="{}", help="JSON object")
    append.add_argument("--metadata", default="{}", help="JSON object (actor, reason, ...)")
    append.add_argument("--occurred-at", help="valid time, ISO 8601 with a zone")
    append.add_argument("--expected-version", help="any, no_stream, stream_exists or a number")
    append.add_argument("--create", action="store_true", help="create the lake if missing")
    append.set_defaults(run=cmd_append)

    def timed(command: argparse.ArgumentParser, *, position: bool = True) -> None:
        command.add_argument("lake", help=LAKE)
        command.add_argument("--as-of", help="system time: answer with what had been recorded then")
        command.add_argument("--valid-at", help="valid time: answer with what had happened by then")
        if position:
            command.add_argument("--position", type=int, help="log position to answer at")
        command.add_argument(
            "--format", choices=["table", "csv", "json", "parquet"], default="table"
        )
        command.add_argument("--output", help="write to this file instead of the screen")
        limit_option(command)

    def engine_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--engine",
            choices=["duckdb", "spark"],
            default="duckdb",
            help="where the query runs: DuckDB in this process (default), or Apache Spark "
            "(pip install 'esanalytics[spark]' and Java 17+; the configured spark.master, "
            "else every core here)",
        )

    sql = sub.add_parser("sql", help="run SQL over the lake's `events` (cut by --as-of/--valid-at)")
    timed(sql)
    sql.add_argument(
        "query",
        help="SQL over the view events (payload fields: data->>'$.amount'), "
        "events_<category> (compacted lakes: a typed column per payload field, e.g. "
        "SELECT sum(amount) FROM events_account), the shipped projections' tables "
        "(account_balances, order_status) and macros (events_as_of(t), "
        "account_balances_as_of(t), ...)",
    )
    sql.add_argument(
        "--projection",
        action="append",
        metavar="PROJECTION",
        help="also register your own projection as a table (repeatable): " + USER_PROJECTIONS,
    )
    engine_option(sql)
    sql.set_defaults(run=cmd_sql)

    state = sub.add_parser("state", help="a projection's state, now or at a cut")
    timed(state)
    state.add_argument("projection", help=PROJECTION_HELP)
    state.add_argument("--key", help="only this stream")
    engine_option(state)
    state.set_defaults(run=cmd_state)

    history = sub.add_parser("history", help="a projection's state history, or one entity's trail")
    timed(history)
    history.add_argument("projection", help=PROJECTION_HELP)
    history.add_argument("--key", help="only this stream")
    history.add_argument("--axis", choices=["system", "valid"], default="system")
    history.add_argument(
        "--trail",
        action="store_true",
        help="each event: who, why, both times, before and after (needs --key)",
    )
    history.add_argument(
        "--changes-of",
        metavar="FIELD[,FIELD]",
        help="one row per change of these fields (e.g. status) instead of one per event",
    )
    history.set_defaults(run=cmd_history)

    materialize = sub.add_parser(
        "materialize",
        help="keep a projection's state in the lake (refreshed incrementally, with checkpoints "
        "that esa state --as-of then answers from)",
    )
    materialize.add_argument("lake", help=LAKE)
    materialize.add_argument("projection", help=PROJECTION_HELP)
    materialize.add_argument("--rebuild", action="store_true", help="recompute from the whole log")
    materialize.add_argument(
        "--checkpoint-every",
        type=int,
        default=10_000,
        metavar="EVENTS",
        help="the finest checkpoint spacing (default 10,000; 0: no checkpoints), doubled as "
        "the lake grows to keep at most --max-checkpoints",
    )
    materialize.add_argument(
        "--max-checkpoints", type=int, default=32, metavar="N", help="default 32"
    )
    materialize.set_defaults(run=cmd_materialize)

    chart = sub.add_parser(
        "chart", help="draw a chart of the lake to .html (offline, interactive), .svg or .png"
    )
    chart.add_argument("lake", help=LAKE)
    chart.add_argument("kind", choices=CHARTS, help="the chart: " + ", ".join(CHARTS))
    chart.add_argument("--output", required=True, help="the file to write: .html, .svg or .png")
    chart.add_argument(
        "--projection",
        default="account_balances",
        help="default: account_balances; " + PROJECTION_HELP,
    )
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
    diff.add_argument("projection", help=PROJECTION_HELP)
    diff.add_argument("since_time", metavar="FROM", help="the earlier time, e.g. 2024-10-01")
    diff.add_argument("until_time", metavar="TO", help="the later time, e.g. 2024-11-01T12:00Z")
    diff.add_argument("--axis", choices=["system", "valid"], default="system")
    diff.set_defaults(run=cmd_diff)

    since = sub.add_parser("since", help="the keys a projection changed after a log position")
    timed(since, position=False)
    since.add_argument("projection", help=PROJECTION_HELP)
    since.add_argument(
        "since_position",
        type=int,
        metavar="POSITION",
        help="the log position to compare with (each key's state then and now)",
    )
    since.set_defaults(run=cmd_since)

    verify = sub.add_parser(
        "verify",
        help="prove nothing was altered (each file against its committed SHA-256, or every "
        "event's hash when anything differs); say what was altered and where",
    )
    verify.add_argument("lake", help=LAKE)
    verify.add_argument(
        "--deep",
        action="store_true",
        help="recompute every event's hash even when every file matches its digest",
    )
    verify.add_argument("--against", help="a checkpoint file the log must still extend")
    verify.add_argument("--key", help="the key file that signed the checkpoint")
    verify.add_argument("--format", choices=["table", "json"], default="table")
    verify.set_defaults(run=cmd_verify)

    report = sub.add_parser(
        "report", help="an audit report (HTML or PDF) or its extracts (CSV or Parquet)"
    )
    report.add_argument("lake", help=LAKE)
    report.add_argument("--entity", help="one stream id")
    report.add_argument("--actor", help="one actor")
    report.add_argument("--correlation", help="one correlation id")
    report.add_argument("--period", nargs=2, metavar=("FROM", "TO"), help="system time [FROM, TO)")
    report.add_argument("--position", type=int, help="pin to this log position (default: the head)")
    report.add_argument("--format", choices=["html", "pdf", "csv", "parquet"], default="html")
    report.add_argument(
        "--output",
        required=True,
        help="the report file; with --format csv or parquet a report is two tables, so "
        "--output alice.csv writes alice-trail.csv and alice-exceptions.csv, each with a "
        ".sha256 beside it",
    )
    report.add_argument("--against", help="a checkpoint to include and check")
    report.add_argument("--key", help="the checkpoint's key file")
    report.set_defaults(run=cmd_report)

    checkpoint = sub.add_parser("checkpoint", help="export a signed checkpoint of the log")
    checkpoint.add_argument("lake", help=LAKE)
    checkpoint.add_argument("--key", required=True, help="key file (make one with esa keygen)")
    checkpoint.add_argument("--position", type=int, help="default: the head")
    checkpoint.add_argument("--output", help="also write it to this file")
    checkpoint.set_defaults(run=cmd_checkpoint)

    keygen = sub.add_parser("keygen", help="make a new random key for signing checkpoints")
    keygen.add_argument(
        "file", help="the new key file (never overwritten); keep it outside the lake"
    )
    keygen.set_defaults(run=cmd_keygen)

    imp = sub.add_parser(
        "import",
        help="import events from a file (JSON Lines, CSV, Parquet), Kafka topics or an event "
        "store's tables (PostgreSQL, SQLite); resumable and idempotent",
        description="Import the events of SOURCE into LAKE. The import keeps a cursor in the "
        "lake: running the same command again imports only what is new, and events already "
        "imported are never written twice.",
    )
    imp.add_argument("lake", help=LAKE)
    imp.add_argument(
        "source",
        help="a .jsonl/.ndjson file (or .gz), a .csv file, a .parquet file, a folder of "
        "Parquet (hive folders too) or a quoted glob; or Kafka topics: "
        "kafka://HOST:PORT[,HOST:PORT]/TOPIC[,TOPIC] or a regular expression "
        "kafka://HOST:PORT/^orders-.* (query parameters are librdkafka settings, e.g. "
        "?security.protocol=SASL_SSL; USER:PASSWORD@ before the host logs in with SASL; "
        "the stream id is the record key, recorded_at its timestamp, the headers its metadata)",
    )
    imp.add_argument(
        "--name", help="the import's name (default: the file's name, or the first topic's)"
    )
    imp.add_argument(
        "--schema",
        help="a database source's event store layout (default: found by its tables)",
    )
    imp.add_argument(
        "--map",
        action="append",
        metavar="ROLE=FIELD",
        help="where a part of the event comes from, e.g. --map stream_id=account_id, "
        "--map event_type=kind, --map stream_id='account-{account_id}', "
        "--map data=payload, --map metadata.actor=user (repeat for each)",
    )
    imp.add_argument(
        "--occurred-at",
        metavar="FIELD[:FORMAT]",
        help="the field with the business time; FORMAT: iso (default), epoch_s, epoch_ms, "
        "epoch_us or a strptime pattern",
    )
    imp.add_argument(
        "--recorded-at",
        metavar="FIELD[:FORMAT]",
        help="the field with the source's own commit time (default: the time of the import)",
    )
    imp.add_argument(
        "--timezone",
        metavar="ZONE",
        help="the zone of times that carry none, e.g. UTC or Europe/Berlin (default: refuse them)",
    )
    imp.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="skip: write rows that cannot be imported, with reasons, to LAKE.rejects/NAME.jsonl",
    )
    imp.add_argument(
        "--follow",
        action="store_true",
        help="keep importing what is appended to the source until Ctrl-C",
    )
    imp.add_argument("--poll", type=float, default=1.0, help="seconds between looks (--follow)")
    imp.add_argument("--create", action="store_true", help="make the lake if it does not exist")
    imp.add_argument("--format", choices=["table", "json"], default="table")
    imp.set_defaults(run=cmd_import)

    compact = sub.add_parser("compact", help="cluster small files by stream")
    compact.add_argument("lake", help=LAKE)
    compact.add_argument("--vacuum-after", type=float, default=3600.0, help="seconds")
    compact.set_defaults(run=cmd_compact)
    vacuum = sub.add_parser(
        "vacuum", help="delete replaced files (and, on s3://, files no commit names)"
    )
    vacuum.add_argument("lake", help=LAKE)
    vacuum.add_argument(
        "--older-than",
        type=float,
        default=3600.0,
        help="seconds (default an hour: readers pinned to older positions may still read them)",
    )
    vacuum.set_defaults(run=cmd_vacuum)
    copy = sub.add_parser("copy", help="copy a lake folder to object storage (s3://)")
    copy.add_argument("lake", help="the lake folder to copy (it is only read)")
    copy.add_argument("target", help="an empty s3://bucket/prefix (options from AWS_*)")
    copy.set_defaults(run=cmd_copy)
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


def _output_inside(lake: Path, output: str) -> bool:
    from esanalytics.store.layout import inside_lake  # (the store package loads pyarrow)

    return inside_lake(lake, output)


def _write_whole(path: Path, data: str | bytes) -> None:
    from esanalytics.store._atomic import write_whole

    write_whole(path, data)


#: The global options that bound DuckDB, and the environment variables they set for the
#: verb (and the processes it starts), read by every connection esanalytics._duck opens.
_LIMIT_OPTIONS = (
    ("memory_limit", "ESA_MEMORY_LIMIT"),
    ("temp_dir", "ESA_TEMP_DIR"),
    ("max_temp_size", "ESA_MAX_TEMP_SIZE"),
)


@contextlib.contextmanager
def _duckdb_limits(args: argparse.Namespace) -> Iterator[None]:
    """Set the DuckDB limits given as global options for the verb, checked first (a bad
    size fails before any work, with a hint); the environment is restored afterwards."""
    given = {var: value for name, var in _LIMIT_OPTIONS if (value := getattr(args, name, None))}
    if not given:
        yield
        return
    saved = {var: os.environ.get(var) for var in given}
    os.environ.update(given)
    try:
        from esanalytics._duck import connect

        connect().close()
        yield
    finally:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        lake, output = getattr(args, "lake", None), getattr(args, "output", None)
        if lake and output and _output_inside(Path(lake), output):
            raise esa.ValidationError(
                f"--output {output} is inside the lake. Nothing was run.",
                hint="a lake's files are written only by esa, so that its commit log and "
                "digests stay true; write the output to a path outside the lake folder.",
            )
        if args.command in _NO_DATAFRAMES:
            _skip_pandas_probe()
        with warnings.catch_warnings(), _duckdb_limits(args):
            warnings.showwarning = _show_warning
            code: int = args.run(args)
        return code
    except esa.EsaError as error:
        _report(error.problem, getattr(error, "cli_hint", None) or error.hint)
        return EXIT_ERROR
    except BrokenPipeError:  # e.g. piped into head
        return EXIT_OK
    except OSError as error:  # writing an output file: a full disk, no permission
        if error.errno not in _STORAGE_ERRNOS:
            if os.environ.get("ESA_DEBUG"):
                raise
            _report(*_explain(error, args))
            return EXIT_ERROR
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
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # never a traceback: say what failed, and what to do
        if os.environ.get("ESA_DEBUG"):
            raise
        _report(*_explain(error, args))
        return EXIT_ERROR


# The verbs that build no DataFrame. pyarrow imports pandas (0.5-1 s, half of a verb's start)
# the first time it converts any Python value, only to ask whether the value is a DataFrame;
# these verbs let it find pandas absent. Anything that later asks pyarrow for a DataFrame
# makes it import pandas then, and code that imports pandas itself is unaffected.
_NO_DATAFRAMES = frozenset(
    {"init", "info", "read", "append", "sql", "state", "history", "diff", "since",
     "materialize", "verify", "checkpoint", "keygen", "compact"}
)  # fmt: skip


class _NoPandas:
    """An import finder for which pandas is not installed."""

    def find_spec(self, name: str, *args: Any) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is skipped here", name=name)


def _skip_pandas_probe() -> None:
    if "pandas" in sys.modules:
        return
    import pyarrow as pa

    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.scalar(0)  # the probe: pyarrow looks for pandas once, on its first conversion
    finally:
        sys.meta_path.remove(finder)


def _report(problem: str, hint: str | None) -> None:
    from rich.markup import escape

    console = _err_console()
    whole = not console.is_terminal  # into a pipe or a file, never cut a path by a newline
    console.print(f"[red]error:[/red] {escape(problem)}", soft_wrap=whole)
    if hint:
        console.print(f"Hint: {hint}", markup=False, soft_wrap=whole)


def _explain(error: Exception, args: argparse.Namespace) -> tuple[str, str]:
    """The problem and the hint for an error that is not an EsaError: DuckDB's (a query that
    does not bind, or a file it could not read) and the operating system's."""
    message = str(error).strip()
    if type(error).__module__.startswith(("duckdb", "_duckdb")):
        lake = getattr(args, "lake", "LAKE")
        kind = type(error).__name__
        from esanalytics.engine import query_error

        refused = query_error(error)
        if refused is not None:
            return refused.problem, str(getattr(refused, "cli_hint", refused.hint))
        if kind == "OutOfMemoryException":
            return (
                f"DuckDB ran out of memory: {message.splitlines()[0]}",
                "raise the limit with `esa --memory-limit SIZE` (or ESA_MEMORY_LIMIT), or give "
                "it room to spill: `--temp-dir` on a disk with space, `--max-temp-size`.",
            )
        if kind in ("IOException", "InvalidInputException", "HTTPException"):
            return (
                f"A file of the lake could not be read: {message}",
                f"run `esa verify {lake}` to see what is damaged and where; restore it from a "
                "backup.",
            )
        return (f"DuckDB refused: {message}", "check the query and the options given.")
    if isinstance(error, OSError):
        named = error.filename or getattr(args, "output", None)
        where = f" {named}" if named else ""
        return (
            f"Cannot use{where}: {error.strerror or message}.",
            "check the path and its permissions.",
        )
    return (
        f"Unexpected {type(error).__name__}: {message}",
        "this is a bug in esanalytics; run again with ESA_DEBUG=1 to see the traceback, and "
        "report it.",
    )


if __name__ == "__main__":
    sys.exit(main())
