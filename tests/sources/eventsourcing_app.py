"""A small bank written with the ``eventsourcing`` library, for the import tests: its events
carry the library's transcoded values (UUID, Decimal, datetime) in the states it stores."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import Cipher, JSONTranscoder, Transcoding
from eventsourcing.utils import Environment


class Account(Aggregate):
    """A bank account."""

    @event("Opened")
    def __init__(self, owner: str, branch: UUID) -> None:
        self.owner = owner
        self.branch = branch
        self.balance = Decimal("0.00")

    @event("Deposited")
    def deposit(self, amount: Decimal, note: dict[str, Any]) -> None:
        self.balance += amount

    @event("Closed")
    def close(self, on: datetime) -> None:
        self.closed_on = on


class Bank(Application[UUID]):
    """The application: opens and closes accounts."""

    def open(self, owner: str, deposits: int = 2) -> UUID:
        account = Account(owner, UUID(int=7))
        for n in range(deposits):
            account.deposit(Decimal(f"{n + 1}0.05"), {"by": owner, "n": n, "tags": ["a", "é"]})
        self.save(account)
        return account.id

    def close_account(self, account_id: UUID) -> None:
        account: Account = self.repository.get(account_id)
        account.close(datetime(2025, 3, 1, 12, 30, tzinfo=UTC))
        self.save(account)


def sqlite_env(path: str | os.PathLike[str], **more: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path), **more}


def postgres_env(url: str, **more: str) -> dict[str, str]:
    parts = urlsplit(url)
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": parts.path.lstrip("/"),
        "POSTGRES_HOST": parts.hostname or "127.0.0.1",
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": parts.username or "",
        "POSTGRES_PASSWORD": parts.password or "",
        **more,
    }


@contextmanager
def bank(env: dict[str, str]) -> Iterator[Bank]:
    app = Bank(env=env)
    try:
        yield app
    finally:
        app.close()


class ToyCipher(Cipher):
    """A stand-in for the library's AESCipher (whose crypto package is not installed here):
    a random nonce, then the text XORed with a SHA-256 key stream. Its output reads as random
    bytes, as AES-GCM's does."""

    def __init__(self, environment: Environment) -> None:
        self.key = (environment.get("CIPHER_KEY") or "toy").encode()

    def _stream(self, nonce: bytes, n: int) -> bytes:
        out = b""
        counter = 0
        while len(out) < n:
            out += hashlib.sha256(self.key + nonce + counter.to_bytes(8, "big")).digest()
            counter += 1
        return out[:n]

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + bytes(
            a ^ b for a, b in zip(plaintext, self._stream(nonce, len(plaintext)), strict=True)
        )

    def decrypt(self, ciphertext: bytes) -> bytes:
        nonce, body = ciphertext[:12], ciphertext[12:]
        return bytes(a ^ b for a, b in zip(body, self._stream(nonce, len(body)), strict=True))


@dataclass(frozen=True)
class Point:
    """A value the library cannot store without a transcoding of the application's own."""

    x: int
    y: int


class PointAsDict(Transcoding):
    """A custom transcoding whose data is an object (not text)."""

    type = Point
    name = "point"

    def encode(self, obj: Point) -> dict[str, int]:
        return {"x": obj.x, "y": obj.y}

    def decode(self, data: dict[str, int]) -> Point:
        return Point(**data)


class Parcel(Aggregate):
    """A parcel: a created event holding a custom-transcoded value and awkward text, and an
    event class at version 2 (its states carry ``class_version``)."""

    @event("Sent")
    def __init__(self, label: str, at: Point) -> None:
        self.label = label
        self.at = at

    class Moved(Aggregate.Event):
        class_version = 2
        to: Point
        note: str

        def apply(self, aggregate: Aggregate) -> None:
            aggregate.at = self.to  # type: ignore[attr-defined]

    def move(self, to: Point, note: str) -> None:
        self.trigger_event(self.Moved, to=to, note=note)


class Post(Application[UUID]):
    """An application with a transcoding of its own."""

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(PointAsDict())

    def send(self, label: str) -> UUID:
        parcel = Parcel(label, Point(1, 2))
        parcel.move(
            Point(3, 4),
            'text that looks like {"_type_":"uuid_hex","_data_":"'
            + "0" * 32
            + '"} and a \\ backslash, a "quote", a\nnewline, ünïcödé ✓',
        )
        self.save(parcel)
        return parcel.id
