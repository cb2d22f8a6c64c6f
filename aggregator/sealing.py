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
import struct
from collections.abc import Mapping, Sequence
from hashlib import sha256
from typing import Any, NamedTuple

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
_u16 = struct.Struct(">H").pack


def _part(text: str) -> bytes:
    raw = text.encode("utf-8")
    if not 0 < len(raw) <= 0xFFFF:
        raise ValueError("every part of a sealed value's place must be 1..65535 bytes")
    return _u16(len(raw)) + raw


# The AAD is built per value on every read of a sealed column; its parts other than the
# row id repeat across rows, so they are encoded once (a list of 500 transactions opens
# 1,000 values: rebuilding every part per value cost more than the AES-GCM itself).
@functools.lru_cache(maxsize=256)
def _aad_head(table: str, column: str) -> bytes:
    return _AAD_CONTEXT + _part(table) + _part(column)


@functools.lru_cache(maxsize=4096)
def _aad_tail(subject_id: str, region: str) -> bytes:
    return _part(subject_id) + _part(region)


class Field(NamedTuple):
    """Where a sealed value lives: a column of a row, owned by a subject (user).

    A named tuple rather than a frozen dataclass: as immutable, and built in a third of
    the time on paths that open a value per row.
    """

    table: str
    column: str
    row_id: str
    subject_id: str

    def aad(self, region: str) -> bytes:
        return (_aad_head(self.table, self.column) + _part(self.row_id)
                + _aad_tail(self.subject_id, region))


class _Layout(NamedTuple):
    """What :func:`field_of` needs of a mapped class, worked out once per class."""

    table: str
    #: Sealed column -> its encoded AAD head (context, table, column).
    heads: dict[str, bytes]
    #: Primary-key attributes, in the key's order.
    keys: tuple[str, ...]
    #: The attribute naming the subject: a user is its own subject.
    subject: str


_layouts: dict[type[Base], _Layout] = {}


def _layout(cls: type[Base]) -> _Layout:
    table = table_of(cls)
    mapper = inspect(cls)
    heads = {c.name: _aad_head(table.name, c.name) for c in table.columns if c.info.get("sealed")}
    keys = tuple(mapper.get_property_by_column(c).key for c in mapper.primary_key)
    layout = _layouts[cls] = _Layout(
        table.name, heads, keys, "id" if issubclass(cls, User) else "user_id")
    return layout


def _place(obj: Base, column: str) -> tuple[_Layout, str, str]:
    """``obj``'s layout, row id and subject id, checked for sealing into ``column``.

    Attributes are read from the instance dict first: it is where SQLAlchemy keeps a
    loaded value, and the instrumented descriptor costs several times the read. A value
    not loaded (or None) goes through the descriptor, so the outcome is the same.
    """
    layout = _layouts.get(type(obj)) or _layout(type(obj))
    if column not in layout.heads:
        raise ValueError(f"{layout.table}.{column} is not a sealed column")
    values = obj.__dict__
    keys = layout.keys
    if len(keys) == 1:  # the common case, without building a list
        key = values.get(keys[0])
        if key is None:
            key = getattr(obj, keys[0])
            if key is None:
                raise ValueError(f"assign {layout.table}'s id before sealing into it")
        row_id = key if type(key) is str else str(key)
    else:
        parts = [getattr(obj, a) for a in keys]
        if any(k is None for k in parts):
            raise ValueError(f"assign {layout.table}'s id before sealing into it")
        row_id = "/".join(str(k) for k in parts)
    subject = values.get(layout.subject)
    if subject is None:
        subject = getattr(obj, layout.subject, None)
    if not isinstance(subject, str):
        raise ValueError(f"{layout.table} rows name no user to seal for")
    return layout, row_id, subject


def field_of(obj: Base, column: str) -> Field:
    """The place of ``obj``'s sealed ``column``; the object's id must already be set."""
    layout, row_id, subject = _place(obj, column)
    return Field(layout.table, column, row_id, subject)


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
        #: Subject id -> the encoded tail of its AAD (subject, region); bounded.
        self._tails: dict[str, bytes] = {}

    def aad_of(self, obj: Base, column: str) -> bytes:
        """``field_of(obj, column).aad(region)``, built without the intermediate Field."""
        layout, row_id, subject = _place(obj, column)
        tail = self._tails.get(subject)
        if tail is None:
            if len(self._tails) >= _TAILS_KEPT:
                self._tails.clear()
            tail = self._tails[subject] = _part(subject) + _part(self.region)
        return layout.heads[column] + _part(row_id) + tail

    async def seal(
        self, key: WrappedKey, field: Field, value: str | bytes,
        *, session: AsyncSession | None = None,
    ) -> bytes:
        return await self._seal(key, field.aad(self.region), value, session)

    async def open(self, key: WrappedKey, field: Field, blob: bytes) -> bytes:
        return await self._open(key, blob, field.aad(self.region))

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
        envelope = self._envelope
        for needed in (key, previous):
            if needed is not None and not envelope.is_cached(needed.dek_id):
                await asyncio.to_thread(envelope.prepare, needed)
        head, region, envelope_open = _aad_head(table, column), self.region, envelope.open
        out: list[bytes | None] = []
        for row_id, subject_id, blob in places:
            if blob is None:
                out.append(None)
                continue
            blob = blob if type(blob) is bytes else bytes(blob)
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
        sealed = None if value is None else await self._seal(
            key, self.aad_of(obj, column), value, session
        )
        setattr(obj, column, sealed)

    async def open_from(self, key: WrappedKey, obj: Base, column: str) -> str | None:
        """The clear text of ``obj.<column>`` (sealed text), or None if the column is NULL."""
        blob: Any = obj.__dict__.get(column)  # see _place: the loaded value, if any
        if blob is None:
            blob = getattr(obj, column)
            if blob is None:
                return None
        aad = self.aad_of(obj, column)
        return (await self._open(key, blob if type(blob) is bytes else bytes(blob), aad)
                ).decode("utf-8")

    async def _seal(self, key: WrappedKey, aad: bytes, value: str | bytes,
                    session: AsyncSession | None) -> bytes:
        raw = value.encode("utf-8") if isinstance(value, str) else value
        envelope = self._envelope
        if not envelope.is_cached(key.dek_id):
            # A provider call can be a network round trip (Vault) or an HSM operation.
            await asyncio.to_thread(envelope.prepare, key)
        if self._ledger.available(key.dek_id) < self._ledger.low_water:
            await self._ledger.ensure(key.dek_id, session)
        return envelope.seal(key, raw, aad)

    async def _open(self, key: WrappedKey, blob: bytes, aad: bytes) -> bytes:
        if self._retired:  # a rotation is being resealed somewhere in this region
            previous = self._retired.get(key.dek_id)
            if previous is not None and data_key_id(blob) == previous.dek_id:
                key = previous  # sealed before the key's rotation, not resealed yet
        envelope = self._envelope
        if not envelope.is_cached(key.dek_id):
            await asyncio.to_thread(envelope.prepare, key)
        return envelope.open(key, blob, aad)


#: Distinct subjects whose AAD tails a Sealer keeps (a few hundred bytes each at most).
_TAILS_KEPT = 4096


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
