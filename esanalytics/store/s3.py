"""Lakes on object storage: the S3 side of the store's filesystem seam.

:class:`S3FS` gives the store the same few operations a local folder gives it (read, list,
write whole, create only if absent, stream a Parquet file out), over any S3 API: AWS, MinIO,
Ceph, or the moto server the tests start. pyarrow's ``S3FileSystem`` reads and writes the
Parquet; boto3 makes the conditional PUT (``If-None-Match: *``) that a commit is, and lists.

Object stores have no append, no rename and no lock, so nothing here pretends to: a write
replaces a whole object or creates one that must not exist, and :meth:`S3FS.lock` is a no-op
(commits are optimistic; see :mod:`esanalytics.store.objectlog`). Where the lake's objects are
found and who may read them comes from ``storage_options`` or the usual ``AWS_*`` variables::

    S3FS("s3://bucket/lake", {"endpoint_url": "http://127.0.0.1:9000", "key": "...",
                              "secret": "...", "region": "us-east-1"})

boto3 and fsspec are the ``s3`` extra: without them, opening an ``s3://`` lake says
``pip install 'esanalytics[s3]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pyarrow.fs as pafs

from esanalytics.exceptions import EsaError, LakeNotFoundError, StorageError, ValidationError
from esanalytics.store.fs import LakeFS

if TYPE_CHECKING:
    from esanalytics.store.commitlog import CommitLog

__all__ = [
    "S3FS",
    "S3Options",
    "copy_lake",
    "is_s3_url",
    "register_with_duckdb",
    "require_s3_extra",
    "split_s3_url",
]

#: The storage options a lake accepts, and the other names people pass them by (s3fs's,
#: boto3's, pyarrow's): each alias maps to its canonical key.
_ALIASES = {
    "endpoint_url": "endpoint_url",
    "endpoint": "endpoint_url",
    "endpoint_override": "endpoint_url",
    "region": "region",
    "region_name": "region",
    "key": "key",
    "access_key": "key",
    "aws_access_key_id": "key",
    "secret": "secret",
    "secret_key": "secret",
    "aws_secret_access_key": "secret",
    "token": "token",
    "session_token": "token",
    "aws_session_token": "token",
    "anonymous": "anonymous",
    "anon": "anonymous",
}
#: Where each option comes from when not passed, in order.
_ENVIRONMENT = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "key": ("AWS_ACCESS_KEY_ID",),
    "secret": ("AWS_SECRET_ACCESS_KEY",),
    "token": ("AWS_SESSION_TOKEN",),
}
#: Bytes of the ranges DuckDB read from a lake's objects that a store handle keeps in memory
#: for the next query (objects never change: see ``_Ranges``).
RANGE_CACHE_BYTES = 256 << 20
#: Attempts at a PUT that S3 answers 409 ConditionalRequestConflict (another conditional
#: write to the same key was in flight: AWS says to retry).
_CONFLICT_ATTEMPTS = 5


def is_s3_url(path: object) -> bool:
    """Whether ``path`` names a lake on object storage (``s3://bucket/prefix``)."""
    return isinstance(path, str) and path.startswith("s3://")


def split_s3_url(url: str) -> tuple[str, str]:
    """``(bucket, prefix)`` of ``s3://bucket/prefix`` (the prefix without slashes around it),
    or a ValidationError naming the expected shape."""
    rest = url[len("s3://") :] if url.startswith("s3://") else ""
    bucket, _, prefix = rest.partition("/")
    prefix = prefix.strip("/")
    if not bucket or "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
        raise ValidationError(
            f"{url!r} is not a lake on object storage.",
            hint="name it s3://<bucket>/<prefix>, for example s3://my-bucket/lakes/bank.",
            path=url,
        )
    return bucket, prefix


def require_s3_extra() -> Any:
    """The boto3 module, or a StorageError that says which extra to install."""
    try:
        import boto3
    except ImportError:
        raise StorageError(
            "Lakes on object storage (s3://...) need boto3 and fsspec, which are not installed.",
            hint="pip install 'esanalytics[s3]'",
        ) from None
    return boto3


@dataclass(frozen=True, slots=True)
class S3Options:
    """Where the lake's objects are and who reads them: the endpoint (None: AWS), region,
    credentials (None: boto3's and pyarrow's usual chain) or anonymous access."""

    endpoint_url: str | None = None
    region: str | None = None
    key: str | None = None
    secret: str | None = None
    token: str | None = None
    anonymous: bool = False

    @classmethod
    def resolve(
        cls, given: Mapping[str, Any] | None = None, *, environ: Mapping[str, str] | None = None
    ) -> S3Options:
        """The options ``given`` (under any of their usual names), each missing one taken from
        the ``AWS_*`` environment. An unknown name is a ValidationError listing the known."""
        env = os.environ if environ is None else environ
        options: dict[str, Any] = {}
        for name, value in (given or {}).items():
            canonical = _ALIASES.get(name)
            if canonical is None:
                raise ValidationError(
                    f"Unknown storage option {name!r}.",
                    hint="the options are endpoint_url, region, key, secret, token and "
                    "anonymous (or the AWS_* environment variables).",
                )
            options[canonical] = value
        for canonical, variables in _ENVIRONMENT.items():
            if options.get(canonical) is None:
                options[canonical] = next((env[v] for v in variables if env.get(v)), None)
        anonymous = options.pop("anonymous", False)
        if isinstance(anonymous, str):
            anonymous = anonymous.strip().lower() in ("1", "true", "yes")
        return cls(anonymous=bool(anonymous), **options)

    def as_dict(self) -> dict[str, Any]:
        """The options as ``storage_options`` (for another process, or another lake)."""
        return {
            k: v
            for k, v in {
                "endpoint_url": self.endpoint_url,
                "region": self.region,
                "key": self.key,
                "secret": self.secret,
                "token": self.token,
                "anonymous": self.anonymous or None,
            }.items()
            if v is not None
        }


class S3FS(LakeFS):
    """A lake below ``s3://bucket/prefix``: the store's filesystem seam over an S3 API.

    Paths are relative to the lake (``"_esa/lake.json"``, ``"events/category=a/month=m/x.parquet"``),
    as with a local folder. Writes are whole objects; :meth:`create_new` is the conditional
    PUT a commit is made of; nothing is renamed on publish (files are written under their
    final, unique names before the commit that names them, and no reader lists a folder).
    """

    local = False
    renames_on_publish = False

    def __init__(self, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
        boto3 = require_s3_extra()
        self.bucket, self.prefix = split_s3_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.options = S3Options.resolve(storage_options)
        opts = self.options
        from botocore import UNSIGNED
        from botocore.config import Config

        config = Config(
            signature_version=UNSIGNED if opts.anonymous else None,
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=opts.endpoint_url,
            region_name=opts.region or "us-east-1",
            aws_access_key_id=None if opts.anonymous else opts.key,
            aws_secret_access_key=None if opts.anonymous else opts.secret,
            aws_session_token=None if opts.anonymous else opts.token,
            config=config,
        )
        arrow: dict[str, Any] = {"region": opts.region or "us-east-1", "anonymous": opts.anonymous}
        if opts.endpoint_url:
            scheme, _, host = opts.endpoint_url.partition("://")
            arrow |= {"endpoint_override": host.rstrip("/"), "scheme": scheme}
        if opts.key and not opts.anonymous:
            arrow |= {"access_key": opts.key, "secret_key": opts.secret}
            if opts.token:
                arrow["session_token"] = opts.token
        self._arrow = pafs.S3FileSystem(**arrow)
        self._locks: dict[str, threading.RLock] = {}
        self._fsspec: Any = None
        self._locks_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<S3FS {self.url}>"

    @property
    def arrow(self) -> pafs.FileSystem:
        """pyarrow's S3FileSystem over the same endpoint and keys (paths: :meth:`arrow_path`)."""
        return self._arrow

    # -- names -----------------------------------------------------------------------------

    def key(self, rel: str) -> str:
        """The object key of ``rel``."""
        rel = rel.strip("/")
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def arrow_path(self, rel: str) -> str:
        """``rel`` as pyarrow's S3FileSystem names it (``bucket/key``)."""
        return f"{self.bucket}/{self.key(rel)}"

    def uri(self, rel: str) -> str:
        """``rel`` as DuckDB reads it through the registered filesystem (``s3://bucket/key``)."""
        return f"s3://{self.bucket}/{self.key(rel)}"

    # -- reads -----------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        """Whether the object ``rel`` exists (one HEAD)."""
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
        except Exception as error:
            if _status(error) == 404:
                return False
            raise self._failed("look up", rel, error) from None
        return True

    def _head(self, rel: str) -> dict[str, Any]:
        """The object's HEAD answer; FileNotFoundError if it does not exist."""
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
        except Exception as error:
            if _status(error) == 404:
                raise FileNotFoundError(self.uri(rel)) from None
            raise self._failed("look up", rel, error) from None
        return head

    def size(self, rel: str) -> int:
        """The object's length in bytes; FileNotFoundError if it does not exist."""
        return int(self._head(rel)["ContentLength"])

    def read_bytes(self, rel: str) -> bytes:
        """The object's bytes; FileNotFoundError if it does not exist."""
        try:
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))[
                "Body"
            ].read()
        except Exception as error:
            if _status(error) == 404 or _code(error) == "NoSuchKey":
                raise FileNotFoundError(self.uri(rel)) from None
            raise self._failed("read", rel, error) from None
        return body

    def digest(self, rel: str) -> str:
        """Hex SHA-256 of the object's bytes, streamed."""
        hasher = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"]
            for chunk in body.iter_chunks(1 << 20):
                hasher.update(chunk)
        except Exception as error:
            if _status(error) == 404 or _code(error) == "NoSuchKey":
                raise FileNotFoundError(self.uri(rel)) from None
            raise self._failed("read", rel, error) from None
        return hasher.hexdigest()

    def list_sized(self, rel: str, *, start_after: str | None = None) -> Iterator[tuple[str, int]]:
        """``(rel path, bytes)`` of every object below the folder ``rel``, in key order
        (S3 lists in UTF-8 binary order), from after the rel path ``start_after`` on."""
        prefix = (
            self.key(rel) + "/" if rel.strip("/") else (self.prefix + "/" if self.prefix else "")
        )
        cut = len(self.prefix) + 1 if self.prefix else 0
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after is not None:
            kwargs["StartAfter"] = self.key(start_after)
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                for item in page.get("Contents", ()):
                    yield item["Key"][cut:], int(item["Size"])
        except Exception as error:
            raise self._failed("list", rel or ".", error) from None

    def list_files(self, rel: str) -> list[str]:
        """Every object below the folder ``rel``, as rel paths, sorted."""
        return sorted(path for path, _ in self.list_sized(rel))

    def children(self, rel: str) -> list[str]:
        """The names directly inside the folder ``rel`` (objects, and the folders their keys
        imply), sorted; empty when there is none."""
        base = self.key(rel) + "/" if rel.strip("/") else (self.prefix + "/" if self.prefix else "")
        names: set[str] = set()
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/"
            )
            for page in pages:
                names.update(item["Key"][len(base) :] for item in page.get("Contents", ()))
                names.update(
                    item["Prefix"][len(base) :].rstrip("/")
                    for item in page.get("CommonPrefixes", ())
                )
        except Exception as error:
            raise self._failed("list", rel or ".", error) from None
        return sorted(names)

    def modified(self, rel: str) -> float:
        """The object's last-modified time, in seconds since the epoch (for vacuum's age)."""
        return float(self._head(rel)["LastModified"].timestamp())

    # -- writes ----------------------------------------------------------------------------

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace the object whole (one PUT: readers see the old bytes or the new)."""
        try:
            self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=data)
        except Exception as error:
            raise self._failed("write", rel, error) from None

    def create_new(self, rel: str, data: bytes) -> bool:
        """Create the object only if no object has its name (``PUT If-None-Match: *``):
        True if this call made it, False if one exists (made by anyone else, or by an earlier
        attempt of this call that S3 took although its answer was lost: then its bytes are
        ``data``, and it counts as made here)."""
        for attempt in range(_CONFLICT_ATTEMPTS):
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self.key(rel), Body=data, IfNoneMatch="*"
                )
            except Exception as error:
                status = _status(error)
                if status == 412:
                    # botocore retries a PUT whose answer was lost; if S3 had taken it, the
                    # retry is refused: the object holding our own bytes is ours.
                    with contextlib.suppress(FileNotFoundError):
                        return self.read_bytes(rel) == data
                    continue
                if status == 409 and attempt + 1 < _CONFLICT_ATTEMPTS:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if status == 501:
                    raise StorageError(
                        f"The object store at {self.options.endpoint_url or 'AWS'} does not "
                        "support conditional writes (PUT with If-None-Match: *), which commits "
                        "to a lake on object storage are made of.",
                        hint="use AWS S3, MinIO 2024 or newer, or another store that honours "
                        "If-None-Match on PUT. Nothing was written.",
                        path=self.uri(rel),
                    ) from None
                raise self._failed("write", rel, error) from None
            return True
        return False

    def open_output(self, rel: str) -> pa.NativeFile:
        """A stream that writes the object ``rel`` (a multipart upload for a large one); the
        object exists, whole, only once the stream is closed."""
        try:
            return self.arrow.open_output_stream(self.arrow_path(rel))
        except OSError as error:
            raise self._failed("write", rel, error) from None

    def remove(self, rel: str) -> None:
        """Delete the object (a missing one is fine)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))
        except Exception as error:
            if _status(error) != 404:
                raise self._failed("delete", rel, error) from None

    def rename(self, src: str, dst: str) -> None:
        """Copy ``src`` to ``dst`` and delete ``src``: two steps, never relied on to be atomic
        (the store renames nothing on object storage)."""
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self.key(dst),
                CopySource={"Bucket": self.bucket, "Key": self.key(src)},
            )
        except Exception as error:
            if _status(error) == 404:
                raise FileNotFoundError(self.uri(src)) from None
            raise self._failed("copy", src, error) from None
        self.remove(src)

    def make_dirs(self, rel: str) -> None:
        """Nothing: object stores have no folders."""

    def sync(self, rel: str) -> None:
        """Nothing: a PUT is durable once it returns."""

    def sync_dir(self, rel: str) -> None:
        """Nothing: there is no folder entry to make durable."""

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A lock between this process's threads only: between processes and machines,
        commits to object storage are optimistic (a conditional PUT decides)."""
        with self._locks_lock:
            held = self._locks.setdefault(name, threading.RLock())
        return _holding(held)

    def commit_log(self) -> CommitLog:
        """The lake's commit log (a new reader and appender of it): one object per line
        below ``_esa/commits/``, with the API of the local log."""
        from esanalytics.store.objectlog import ObjectCommitLog

        return cast("CommitLog", ObjectCommitLog(self))

    # -- DuckDB ----------------------------------------------------------------------------

    def fsspec(self) -> Any:
        """An fsspec filesystem of protocol ``s3`` over :attr:`arrow`, for DuckDB's
        ``register_filesystem`` (see :func:`register_with_duckdb`). Made once per S3FS."""
        if self._fsspec is None:
            self._fsspec = _duckdb_files(self)
        return self._fsspec

    # -- errors ----------------------------------------------------------------------------

    def _failed(self, action: str, rel: str, error: BaseException) -> EsaError:
        """The esanalytics error for an S3 request that failed."""
        code = _code(error) or type(error).__name__
        if code in ("NoSuchBucket",):
            return LakeNotFoundError(
                f"There is no bucket {self.bucket!r} at {self.options.endpoint_url or 'AWS'}.",
                hint="check the bucket's name and the endpoint_url storage option "
                "(or AWS_ENDPOINT_URL); create the bucket first.",
                path=self.url,
            )
        if code in ("NoCredentialsError", "PartialCredentialsError"):
            return StorageError(
                f"No credentials to {action} {self.uri(rel)} with.",
                hint="pass the key and secret storage options, or set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (anonymous=True for a public bucket).",
                path=self.uri(rel),
            )
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            return StorageError(
                f"Access to {self.uri(rel)} was refused ({code}) when trying to {action} it.",
                hint="check the key and secret storage options (or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY) and the bucket's policy. Nothing was written.",
                path=self.uri(rel),
            )
        return StorageError(
            f"Could not {action} {self.uri(rel)}: {error}",
            hint="check that the object store at "
            f"{self.options.endpoint_url or 'AWS'} is reachable; a failed write leaves "
            "nothing a reader counts, so retrying is safe.",
            path=self.uri(rel),
        )


def copy_lake(source: Path, fs: S3FS, *, workers: int = 8) -> int:
    """Copy the local lake folder ``source`` to ``fs`` (an empty prefix), as an S3 lake holds
    it; returns the number of objects written. Its committed files keep their names (a file
    still under its temporary name, or retired by a compaction, is written under its final
    one, where replaced files stay on object storage until vacuum; the locks are left
    behind); its commit log becomes one object per complete
    line, at the same offsets, so its checkpoint and writer index hold as they are. The lake
    marker goes last: the copy is a lake only once everything else is there."""
    from concurrent.futures import ThreadPoolExecutor

    from esanalytics.store.objectlog import line_name

    if fs.list_files(""):
        raise ValidationError(
            f"{fs.url} is not empty; a lake is copied to a prefix of its own.",
            hint="pick a new prefix (s3://bucket/new-prefix).",
            path=fs.url,
        )
    uploads: list[tuple[Path, str]] = []
    marker = source / "_esa" / "lake.json"
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        if not path.is_file() or path == marker or rel.startswith("_esa/commits.log"):
            continue
        name = path.name
        if name.endswith(".lock"):
            continue
        if name.startswith(".") and name.endswith((".parquet.tmp", ".parquet.retired")):
            final = path.with_name(name[1:].rpartition(".")[0])
            if final.exists():
                continue
            rel = final.relative_to(source).as_posix()
        elif name.startswith("."):
            continue
        uploads.append((path, rel))

    def upload(item: tuple[Path, str]) -> None:
        path, rel = item
        try:
            fs.client.upload_file(str(path), fs.bucket, fs.key(rel))
        except Exception as error:
            raise fs._failed("write", rel, error) from None

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(upload, uploads))
    data = (source / "_esa" / "commits.log").read_bytes()
    lines: list[tuple[str, bytes]] = []
    offset = 0
    while (end := data.find(b"\n", offset)) >= 0:  # a torn last line is not a commit
        lines.append((line_name(offset), data[offset : end + 1]))
        offset = end + 1
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda line: fs.write_atomic(*line), lines))
    fs.write_atomic("_esa/lake.json", marker.read_bytes())
    return len(uploads) + len(lines) + 1


def register_with_duckdb(con: Any, fs: LakeFS) -> str:
    """Let DuckDB read the ``s3://`` paths of ``fs``'s lake, and say how: ``"httpfs"`` where
    DuckDB's own extension loads (given the endpoint and keys as a secret), else
    ``"fsspec"``: fs's filesystem, registered with ``con.register_filesystem``. Either way
    DuckDB fetches only the footers and the row groups a query needs (the external file
    cache, which would read a registered filesystem's files in whole 2 MB blocks, is off)."""
    assert isinstance(fs, S3FS)
    try:
        con.execute("LOAD httpfs")
    except Exception:  # not installed, and not installable here: fall back
        con.register_filesystem(fs.fsspec())
        con.execute("SET enable_external_file_cache = false")
        return "fsspec"
    opts = fs.options
    secret = {"TYPE": "s3", "REGION": opts.region or "us-east-1", "URL_STYLE": "path"}
    if opts.endpoint_url:
        scheme, _, host = opts.endpoint_url.partition("://")
        secret |= {"ENDPOINT": host.rstrip("/"), "USE_SSL": str(scheme == "https").lower()}
    if opts.key and not opts.anonymous:
        secret |= {"KEY_ID": opts.key, "SECRET": opts.secret or ""}
        if opts.token:
            secret["SESSION_TOKEN"] = opts.token
    fields = ", ".join(
        f"{k} {v}" if v in ("true", "false") or k == "TYPE" else f"{k} '{_quoted(v)}'"
        for k, v in secret.items()
    )
    con.execute(
        f"CREATE OR REPLACE SECRET esa_s3_{abs(hash(fs.url))} ({fields}, SCOPE '{_quoted(fs.url)}')"
    )
    return "httpfs"


def _duckdb_files(fs: S3FS) -> Any:
    """The fsspec filesystem DuckDB reads ``fs``'s objects through (see :meth:`S3FS.fsspec`).

    Two things differ from fsspec's plain ``ArrowFSWrapper``. DuckDB asks for a file's size,
    time and existence several times per open (each a HEAD): a lake's objects are written
    once under unique names, so the first answer is kept. And DuckDB's threads share a
    handle, calling ``seek`` then ``read`` as two steps: each thread keeps its own position
    here and reads with ``read_at``, so one thread's seek never moves another's read (and
    one pyarrow handle per object serves every open of it). The ranges read are kept for the
    next query (``_Ranges``)."""
    try:
        from fsspec.implementations.arrow import ArrowFSWrapper
    except ImportError:
        raise StorageError(
            "Querying a lake on object storage needs fsspec, which is not installed.",
            hint="pip install 'esanalytics[s3]'",
        ) from None
    from datetime import UTC, datetime

    known: dict[str, pafs.FileInfo] = {}
    streams: dict[str, Any] = {}
    lock = threading.Lock()
    epoch = datetime(1970, 1, 1, tzinfo=UTC)

    class _Files(ArrowFSWrapper):  # type: ignore[misc]
        protocol = ("s3", "s3a")
        ranges = _Ranges(RANGE_CACHE_BYTES)

        def _info(self, path: str) -> pafs.FileInfo:
            path = self._strip_protocol(path)
            found = known.get(path)
            if found is None:
                [found] = fs.arrow.get_file_info([path])
                if found.type == pafs.FileType.NotFound:
                    raise FileNotFoundError(path)
                if found.type == pafs.FileType.File:
                    known[path] = found
            return found

        def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
            return dict(self._make_entry(self._info(path)))

        def exists(self, path: str, **kwargs: Any) -> bool:
            try:
                self._info(path)
            except FileNotFoundError:
                return False
            return True

        def size(self, path: str) -> int:
            return int(self._info(path).size)

        def modified(self, path: str) -> datetime:
            return epoch  # (written once: its time never tells DuckDB anything new)

        def glob(self, path: str, **kwargs: Any) -> Any:
            if any(c in path for c in "*?["):
                return super().glob(path, **kwargs)
            return [self._strip_protocol(path)] if self.exists(path) else []

        def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            if mode != "rb":
                return super()._open(path, mode, **kwargs)
            info = self._info(path)
            with lock:
                stream = streams.get(info.path)
                if stream is None:  # (opening costs a HEAD: one open handle per object)
                    stream = streams[info.path] = fs.arrow.open_input_file(info.path)
            return _SharedFile(stream, info.size, self.ranges, info.path)

    return _Files(fs.arrow)


class _Ranges:
    """The byte ranges DuckDB read from a lake's objects, kept (least recently used first
    out) up to :data:`RANGE_CACHE_BYTES`: objects are written once under unique names, so a
    range read once is the same bytes the next time, as the page cache keeps a local file's.
    ``hits`` and ``misses`` count the reads served from memory and from the store."""

    def __init__(self, budget: int) -> None:
        from collections import OrderedDict

        self.budget = budget
        self.held = 0
        self.hits = self.misses = 0
        self._kept: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, int, int]) -> bytes | None:
        with self._lock:
            data = self._kept.get(key)
            if data is None:
                self.misses += 1
                return None
            self._kept.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: tuple[str, int, int], data: bytes) -> None:
        if len(data) > self.budget // 4:
            return
        with self._lock:
            if key in self._kept:
                return
            self._kept[key] = data
            self.held += len(data)
            while self.held > self.budget:
                _, dropped = self._kept.popitem(last=False)
                self.held -= len(dropped)


#: Objects up to this size are fetched whole by the first read of them (and kept with the
#: ranges): a query reads a small file's footer, then its column chunks, each a request.
WHOLE_OBJECT_BYTES = 4 << 20


class _SharedFile:
    """A read-only object handle that DuckDB's threads can share: positions are per thread,
    and every read is a positional ``read_at`` (see :func:`_duckdb_files`)."""

    def __init__(self, stream: Any, size: int, ranges: _Ranges, path: str) -> None:
        self._stream = stream
        self._size = size
        self._ranges = ranges
        self._path = path
        self._local = threading.local()
        self.closed = False

    def _position(self) -> int:
        return int(getattr(self._local, "position", 0))

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._position(), 2: self._size}[whence]
        self._local.position = base + offset
        return int(self._local.position)

    def tell(self) -> int:
        return self._position()

    def read(self, length: int = -1) -> bytes:
        position = self._position()
        if length is None or length < 0:
            length = self._size - position
        length = max(0, min(length, self._size - position))
        if 0 < self._size <= WHOLE_OBJECT_BYTES:  # one GET for the footer and every chunk
            whole = self._ranges.get((self._path, 0, self._size))
            if whole is None:
                whole = self._stream.read_at(self._size, 0)
                self._ranges.put((self._path, 0, self._size), whole)
            self._local.position = position + length
            return whole[position : position + length]
        key = (self._path, position, length)
        data = self._ranges.get(key)
        if data is None:
            data = self._stream.read_at(length, position) if length else b""
            self._ranges.put(key, data)
        self._local.position = position + len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True  # (the pyarrow handle stays open for the next open of the object)

    def __enter__(self) -> _SharedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _quoted(value: str) -> str:
    return value.replace("'", "''")


@contextlib.contextmanager
def _holding(lock: threading.RLock) -> Iterator[None]:
    with lock:
        yield


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(status) if status is not None else None
    return None


def _code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return str(code) if code is not None else None
    return None
