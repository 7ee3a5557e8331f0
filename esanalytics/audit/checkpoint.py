"""Signed checkpoints: a log position and its chain digest, signed with a key you hold.

The chain proves that nothing *inside* the log changed, but not that the log was not cut
short or replaced wholesale: an attacker who rewrites everything can recompute every hash.
A checkpoint exported now and kept elsewhere closes that gap: later, ``verify --against``
proves the log still holds the checkpointed event with the same hash, so it extends it.

A checkpoint also signs the newest commit line and its digest (``commit``, ``log_digest``).
The commit lines are linked by hashes and name each file's SHA-256, so the signature vouches
for every file committed up to then, and ``verify --against`` can prove the log by hashing
those files whole. Files that compaction wrote after the checkpoint are not vouched for by it;
while they hold events from before the checkpoint, ``verify`` recomputes every event's hash
instead (correct, only slower): export a new checkpoint after compacting.

Keys: ``esa keygen FILE`` writes 32 random bytes (hex) to FILE with owner-only permissions.
Keep it outside the lake, e.g. in your secrets manager; anyone with the key can both sign
and check checkpoints (HMAC-SHA256 from Python's standard library). Rotate by exporting a
new checkpoint with the new key.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import os
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from esanalytics.audit.verify import Finding
from esanalytics.events import validate_position
from esanalytics.exceptions import ValidationError
from esanalytics.store import EventStore
from esanalytics.store._atomic import temporary_beside
from esanalytics.store._faults import kill_point

__all__ = ["check_checkpoint", "make_checkpoint", "make_key", "read_key"]

ALGORITHM = "HMAC-SHA256"


def make_key(path: str | os.PathLike[str]) -> Path:
    """Write a new random key to ``path`` (refusing to overwrite one)."""
    target = Path(path)
    if target.exists():  # before writing anything (the link below decides in a race)
        raise FileExistsError(errno.EEXIST, "a key is never overwritten", str(target))
    # Written whole under a temporary name, then linked into place, which fails if a key is
    # there: a full disk or a kill never leaves a partial key that could not be replaced.
    tmp = temporary_beside(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_key(path: str | os.PathLike[str]) -> bytes:
    try:
        text = Path(path).read_text().strip()
        key = bytes.fromhex(text)
    except (OSError, ValueError):
        raise ValidationError(
            f"{path} is not a key file.", hint="make one with `esa keygen FILE` and keep it safe."
        ) from None
    if len(key) < 16:
        raise ValidationError(
            f"The key in {path} is too short.", hint="use `esa keygen` (32 bytes)."
        )
    return key


_SIGNED = ("position", "digest", "created_at", "algorithm", "commit", "log_digest")


def _signed_fields(checkpoint: dict[str, Any]) -> bytes:
    """The signed text: every signed field the checkpoint has (checkpoints made before
    ``commit`` and ``log_digest`` existed have only the first four)."""
    fields = {k: checkpoint[k] for k in _SIGNED if k in checkpoint}
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def make_checkpoint(
    store: EventStore, key: bytes, *, position: int | None = None
) -> dict[str, Any]:
    """A checkpoint of the log at ``position`` (default: the head), signed with ``key``.
    Events of small appends still held only in the commit log are sealed into Parquet first,
    so that every event up to the checkpoint sits in a file the signature covers."""
    if store.unsealed().num_rows:
        store.flush()
    kill_point("export.after_flush")
    position = store.head if position is None else validate_position(position)
    if position == 0:
        raise ValidationError(
            "The log is empty: there is nothing to checkpoint.", hint="append first."
        )
    event = store.read_all(from_position=position - 1, position=position).to_arrow()
    digest = event["hash"][0].as_py()
    line = store.commit_lines()[-1]  # read after the position: it covers it
    checkpoint = {
        "position": position,
        "digest": digest,
        "created_at": datetime.now(UTC).isoformat(),
        "algorithm": ALGORITHM,
        "commit": line.record["n"],
        "log_digest": line.digest,
    }
    checkpoint["signature"] = hmac.new(key, _signed_fields(checkpoint), hashlib.sha256).hexdigest()
    return checkpoint


def check_checkpoint(
    store: EventStore, checkpoint: dict[str, Any], key: bytes | None
) -> list[Finding]:
    """Findings if the checkpoint's signature fails or the log no longer extends it."""
    if key is None:
        return [
            Finding(
                "checkpoint", None, None, "no key was given to check the checkpoint's signature"
            )
        ]
    try:
        expected = hmac.new(key, _signed_fields(checkpoint), hashlib.sha256).hexdigest()
        position = int(checkpoint["position"])
    except (KeyError, TypeError, ValueError):
        return [Finding("checkpoint", None, None, "the checkpoint file is incomplete")]
    if not hmac.compare_digest(expected, str(checkpoint.get("signature", ""))):
        return [
            Finding(
                "checkpoint",
                position,
                None,
                "the signature does not match: the checkpoint was altered, or the key is not the one that signed it",
            )
        ]
    if store.head < position:
        return [
            Finding(
                "truncated",
                store.head + 1,
                None,
                f"the log ends at {store.head}, before the checkpoint at {position}",
            )
        ]
    events = store.read_all(from_position=position - 1, position=position).to_arrow()
    if events.num_rows != 1 or events["hash"][0].as_py() != checkpoint["digest"]:
        found = events["hash"][0].as_py() if events.num_rows else "nothing"
        return [
            Finding(
                "checkpoint",
                position,
                None,
                f"the event at the checkpoint has hash {str(found)[:16]}..., the checkpoint says {checkpoint['digest'][:16]}...: the log was replaced",
            )
        ]
    return []
