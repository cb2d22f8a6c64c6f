"""Sealed columns and keyed hashes: how PII and tokens are stored and looked up.

A sealed value is a :mod:`vault.envelope` blob under the data key of the user it belongs
to. Its associated data names its place, so a blob copied to another row, column, user
or region does not open (:class:`vault.AadMismatch`)::

    b"aggregator/field/v1" ‖ for each of (table, column, row id, subject id, region):
                                 2-byte big-endian length ‖ UTF-8 bytes

Length prefixes make the encoding injective: no two different places share an AAD, even
when one part ends with what another starts with.

A keyed hash is HMAC-SHA256 under a per-purpose key derived from the region's pepper
(:mod:`aggregator.pepper`): equal inputs match within a region and purpose, while the
database alone (a dump, a backup) cannot confirm a guessed IBAN or email address.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.datakeys import SealLedger
from aggregator.models import Base, User
from aggregator.models.base import table_of
from vault import Envelope, WrappedKey, data_key_id

_AAD_CONTEXT = b"aggregator/field/v1"
_HASH_CONTEXT = b"aggregator/keyed-hash/v1/"


def _part(text: str) -> bytes:
    raw = text.encode("utf-8")
    if not raw or len(raw) > 0xFFFF:
        raise ValueError("every part of a sealed value's place must be 1..65535 bytes")
    return len(raw).to_bytes(2, "big") + raw


# The AAD is built per value on every read of a sealed column; its parts other than the
# row id repeat across rows, so they are encoded once (a list of 500 transactions opens
# 1,000 values: rebuilding every part per value cost more than the AES-GCM itself).
@functools.lru_cache(maxsize=256)
def _aad_head(table: str, column: str) -> bytes:
    return _AAD_CONTEXT + _part(table) + _part(column)


@functools.lru_cache(maxsize=4096)
def _aad_tail(subject_id: str, region: str) -> bytes:
    return _part(subject_id) + _part(region)


@dataclass(frozen=True, slots=True)
class Field:
    """Where a sealed value lives: a column of a row, owned by a subject (user)."""

    table: str
    column: str
    row_id: str
    subject_id: str

    def aad(self, region: str) -> bytes:
        return (_aad_head(self.table, self.column) + _part(self.row_id)
                + _aad_tail(self.subject_id, region))


@functools.lru_cache(maxsize=128)
def _layout(cls: type[Base]) -> tuple[str, frozenset[str], tuple[str, ...]]:
    """A mapped class's table name, sealed columns and primary-key attributes."""
    table = table_of(cls)
    mapper = inspect(cls)
    sealed = frozenset(c.name for c in table.columns if c.info.get("sealed"))
    keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
    return table.name, sealed, keys


def field_of(obj: Base, column: str) -> Field:
    """The place of ``obj``'s sealed ``column``; the object's id must already be set."""
    table, sealed, attributes = _layout(type(obj))
    if column not in sealed:
        raise ValueError(f"{table}.{column} is not a sealed column")
    if len(attributes) == 1:  # the common case, without building a list
        key = getattr(obj, attributes[0])
        if key is None:
            raise ValueError(f"assign {table}'s id before sealing into it")
        row_id = str(key)
    else:
        keys = [getattr(obj, a) for a in attributes]
        if any(k is None for k in keys):
            raise ValueError(f"assign {table}'s id before sealing into it")
        row_id = "/".join(str(k) for k in keys)
    subject = obj.id if isinstance(obj, User) else getattr(obj, "user_id", None)
    if not isinstance(subject, str):
        raise ValueError(f"{table} rows name no user to seal for")
    return Field(table, column, row_id, subject)


class Sealer:
    """Seals and opens one region's values; async because keys may need the KMS.

    Example::

        key = await custody.data_keys.load(session, user_id)
        await custody.sealer.seal_into(key, account, "holder_name_sealed", "Jane Doe",
                                       session=session)
        name = await custody.sealer.open_from(key, account, "holder_name_sealed")

    Pass the write ``session`` the value will be stored through: the seal ledger may
    reserve more seals in it (on SQLite a second connection would wait on this one).
    """

    def __init__(self, region: str, envelope: Envelope, ledger: SealLedger, *,
                 retired: Mapping[str, WrappedKey] | None = None) -> None:
        self.region = region
        self._envelope = envelope
        self._ledger = ledger
        #: Current key id -> the key it replaced, while the user's values are resealed
        #: (:meth:`aggregator.datakeys.DataKeys.rotate`): old values still open.
        self._retired: Mapping[str, WrappedKey] = {} if retired is None else retired

    async def _ready(self, key: WrappedKey) -> None:
        if not self._envelope.is_cached(key.dek_id):
            # A provider call can be a network round trip (Vault) or an HSM operation.
            await asyncio.to_thread(self._envelope.prepare, key)

    async def seal(
        self, key: WrappedKey, field: Field, value: str | bytes,
        *, session: AsyncSession | None = None,
    ) -> bytes:
        raw = value.encode("utf-8") if isinstance(value, str) else value
        await self._ready(key)
        await self._ledger.ensure(key.dek_id, session)
        return self._envelope.seal(key, raw, field.aad(self.region))

    async def open(self, key: WrappedKey, field: Field, blob: bytes) -> bytes:
        previous = self._retired.get(key.dek_id)
        if previous is not None and data_key_id(blob) == previous.dek_id:
            key = previous  # sealed before the key's rotation, not resealed yet
        await self._ready(key)
        return self._envelope.open(key, blob, field.aad(self.region))

    async def open_column(
        self, key: WrappedKey, table: str, column: str,
        places: Sequence[tuple[str, str, bytes | None]],
    ) -> list[bytes | None]:
        """:meth:`open` of one column of many rows: ``(row id, subject id, blob)`` each.

        A page of 500 transactions opens 1,000 values; per value, :meth:`open` is a
        coroutine, a cache check and an AAD built from parts, which together cost several
        times the AES-GCM itself (bench/README.md). Here the key is made ready once and
        only the row id's part of each AAD is encoded per value. Same checks, same errors.
        """
        previous = self._retired.get(key.dek_id)
        await self._ready(key)
        if previous is not None:
            await self._ready(previous)
        head, region, envelope_open = _aad_head(table, column), self.region, self._envelope.open
        out: list[bytes | None] = []
        for row_id, subject_id, blob in places:
            if blob is None:
                out.append(None)
                continue
            blob = bytes(blob)
            use = key
            if previous is not None and data_key_id(blob) == previous.dek_id:
                use = previous  # sealed before the key's rotation, not resealed yet
            out.append(envelope_open(use, blob, head + _part(row_id)
                                     + _aad_tail(subject_id, region)))
        return out

    async def seal_into(
        self, key: WrappedKey, obj: Base, column: str, value: str | bytes | None,
        *, session: AsyncSession | None = None,
    ) -> None:
        """Set ``obj.<column>`` to ``value`` sealed for exactly that place (or to None)."""
        sealed = None if value is None else await self.seal(
            key, field_of(obj, column), value, session=session
        )
        setattr(obj, column, sealed)

    async def open_from(self, key: WrappedKey, obj: Base, column: str) -> str | None:
        """The clear text of ``obj.<column>`` (sealed text), or None if the column is NULL."""
        blob: Any = getattr(obj, column)
        if blob is None:
            return None
        return (await self.open(key, field_of(obj, column), bytes(blob))).decode("utf-8")


_SPACES = re.compile(r"[\s-]+")


class KeyedHasher:
    """HMAC-SHA256 lookups under the region's pepper, one derived key per purpose.

    Example::

        digest = custody.hasher.account_identifier("DE89 3704 0044 0532 0130 00")
        same = select(Account.id).where(Account.identifier_digest == digest)
    """

    def __init__(self, pepper: bytes) -> None:
        if len(pepper) < 32:
            raise ValueError("the pepper must be at least 32 bytes")
        self._pepper = pepper
        self._macs: dict[str, hmac.HMAC] = {}

    def digest(self, purpose: str, *parts: str) -> bytes:
        mac = self._macs.get(purpose)
        if mac is None:
            key = HKDF(
                algorithm=hashes.SHA256(), length=32, salt=None,
                info=_HASH_CONTEXT + purpose.encode("ascii"),
            ).derive(self._pepper)
            mac = self._macs[purpose] = hmac.new(key, digestmod=sha256)
        mac = mac.copy()
        for part in parts:
            raw = part.encode("utf-8")
            mac.update(len(raw).to_bytes(4, "big") + raw)
        return mac.digest()

    def account_identifier(self, identifier: str) -> bytes:
        """IBANs and account numbers, compared without spaces, dashes or case."""
        return self.digest("account_identifier", _SPACES.sub("", identifier).upper())

    def external_user_id(self, application_id: str, external_id: str) -> bytes:
        """An app's own id for its user; apps never see each other's users."""
        return self.digest("external_user_id", application_id, external_id)
