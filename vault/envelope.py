"""Envelope sealing: AES-256-GCM under a per-subject data key, with key commitment.

Blob format, version 1 (the one place it is documented)::

    offset   size  field
    0        1     format version, 0x01
    1        1     n = length of the data-key id (1..255)
    2        n     data-key id, ASCII
    2+n      32    key commitment = HKDF-SHA256(dek, info="aggregator/envelope/v1/commit")
    34+n     12    nonce, random (NIST SP 800-38D §8.2.2)
    46+n     4     AAD fingerprint = CRC-32(aad), big-endian, only to tell "wrong place" from
                   "tampered" in the error; GCM authenticates the AAD itself
    50+n     ≥16   AES-256-GCM ciphertext ‖ 128-bit tag

The GCM key is HKDF-SHA256(dek, info="aggregator/envelope/v1/encrypt"), and the GCM
associated data is ``header ‖ aad`` where *header* is everything before the ciphertext, so
no header byte can be changed without failing authentication.

Why a commitment: GCM is not key-committing; a crafted ciphertext can open under two
different keys ("invisible salamanders"). Storing a hash-derived commitment of the key and
checking it before decrypting means a blob can only ever open under the key that sealed
it, as the AWS Encryption SDK does by default.

Why count seals: with random 96-bit nonces, SP 800-38D §8.3 caps one key at 2^32
encryptions. :class:`Envelope` refuses at ``seal_limit`` (default 2^28) so rotation is
asked for long before the bound matters.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from vault.errors import (
    AadMismatch,
    SealLimitReached,
    TamperedBlob,
    UnknownFormatVersion,
    WrongDataKey,
)
from vault.interfaces import KeyProvider, WrappedKey

FORMAT_V1 = 0x01
NONCE_SIZE = 12
COMMITMENT_SIZE = 32
AAD_FINGERPRINT_SIZE = 4
TAG_SIZE = 16
DEFAULT_SEAL_LIMIT = 2**28
_SEAL_BLOCK = 1024

_INFO_ENCRYPT = b"aggregator/envelope/v1/encrypt"
_INFO_COMMIT = b"aggregator/envelope/v1/commit"


def _hkdf(key: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(key)


_NONCE_BATCH = 1024
_nonce_pool: list[bytes] = []


def _refill_nonces() -> bytes:
    """Random nonces from the OS CSPRNG, fetched 1,024 at a time.

    One ``getrandom`` call per nonce costs as much as the AES-GCM operation itself; the
    bytes are the same whether read 12 or 12 KiB at a time. ``list.pop`` is atomic under
    the GIL, so threads never share a nonce; two threads refilling at once each add a
    fresh batch. The pool is emptied in a forked child, which would otherwise hand out
    the parent's remaining nonces a second time.
    """
    buf = os.urandom(NONCE_SIZE * _NONCE_BATCH)
    batch = [buf[i : i + NONCE_SIZE] for i in range(0, len(buf), NONCE_SIZE)]
    nonce = batch.pop()
    _nonce_pool.extend(batch)
    return nonce


os.register_at_fork(after_in_child=_nonce_pool.clear)
_next_nonce = _nonce_pool.pop


_pack_u32 = struct.Struct(">I").pack
# The nonce and the AAD fingerprint are adjacent in the header: one pack builds both.
_pack_nonce_fingerprint = struct.Struct(f">{NONCE_SIZE}sI").pack
_crc32 = zlib.crc32


def _fingerprint(aad: bytes) -> bytes:
    return _pack_u32(_crc32(aad))


@dataclass(frozen=True, slots=True)
class BlobHeader:
    """The parsed, unauthenticated header of a blob: trust nothing in it before opening."""

    version: int
    dek_id: str
    nonce: bytes
    commitment: bytes
    aad_fingerprint: bytes
    header_len: int


def parse_header(blob: bytes) -> BlobHeader:
    """Parse a blob's header; raises a :class:`~vault.errors.BlobError` if malformed."""
    if len(blob) < 2:
        raise TamperedBlob("sealed value is truncated; it cannot be opened")
    if blob[0] != FORMAT_V1:
        raise UnknownFormatVersion(
            f"sealed value has format version {blob[0]}; this build reads version "
            f"{FORMAT_V1} only: upgrade the gateway"
        )
    n = blob[1]
    fixed = 2 + n + NONCE_SIZE + COMMITMENT_SIZE + AAD_FINGERPRINT_SIZE
    if n == 0 or len(blob) < fixed + TAG_SIZE:
        raise TamperedBlob("sealed value is truncated; it cannot be opened")
    try:
        dek_id = blob[2 : 2 + n].decode("ascii")
    except UnicodeDecodeError:
        raise TamperedBlob("sealed value has a corrupt data-key id") from None
    pos = 2 + n
    commitment = blob[pos : pos + COMMITMENT_SIZE]
    pos += COMMITMENT_SIZE
    nonce = blob[pos : pos + NONCE_SIZE]
    pos += NONCE_SIZE
    return BlobHeader(FORMAT_V1, dek_id, nonce, commitment, blob[pos:fixed], fixed)


def data_key_id(blob: bytes) -> str:
    """The id of the data key that sealed ``blob`` (to find its wrapped key)."""
    return parse_header(blob).dek_id


class SealCounter(Protocol):
    """Persists how many seals each data key has made, across processes and restarts.

    ``reserve(dek_id, n)`` atomically adds ``n`` to the key's count and returns the new
    total. :class:`Envelope` reserves blocks of seals, so the store is touched once per
    block, not once per value.
    """

    def reserve(self, dek_id: str, n: int) -> int: ...


class MemorySealCounter:
    """Process-local counts: correct for one process; the gateway persists them instead."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def reserve(self, dek_id: str, n: int) -> int:
        with self._lock:
            total = self._counts.get(dek_id, 0) + n
            self._counts[dek_id] = total
            return total


class _Entry:
    """A cached data key: what seal and open need, precomputed once per key load."""

    __slots__ = (
        "body_at", "budget", "commitment", "decrypt", "encrypt", "expires_at", "kek_version",
        "min_len", "nonce_at", "nonce_end", "prefix",
    )

    def __init__(self, dek_id: str, dek: bytes, kek_version: int, expires_at: float) -> None:
        raw_id = dek_id.encode("ascii")
        self.commitment = _hkdf(dek, _INFO_COMMIT)
        # Everything before the nonce is constant per key: version, id, commitment.
        self.prefix = struct.pack("BB", FORMAT_V1, len(raw_id)) + raw_id + self.commitment
        self.nonce_at = len(self.prefix)
        self.nonce_end = self.nonce_at + NONCE_SIZE
        self.body_at = self.nonce_end + AAD_FINGERPRINT_SIZE
        self.min_len = self.body_at + TAG_SIZE
        # One AESGCM object per key (building one per call costs more than the call), its
        # bound methods kept: at 64 bytes even the attribute walk to them shows.
        aead = AESGCM(_hkdf(dek, _INFO_ENCRYPT))
        self.encrypt = aead.encrypt
        self.decrypt = aead.decrypt
        self.kek_version = kek_version
        self.expires_at = expires_at
        self.budget = 0


@dataclass(frozen=True, slots=True)
class CacheStats:
    """Counters an operator can read (`aggregator keys status`, metrics)."""

    size: int
    max_size: int
    ttl_seconds: float
    misses: int
    unwraps: int
    evictions: int


class Envelope:
    """Seals and opens values under data keys, caching unwrapped keys for ``cache_ttl`` s.

    The provider sees one unwrap per data key per cache period. The cache is bounded
    (oldest entry evicted first) and holds derived keys only; the raw data key is dropped
    as soon as the encryption key and commitment are derived from it.

    Example::

        env = Envelope(provider)
        key = env.new_data_key("dek_usr_eu_1")          # store `key` (wrapped) with the user
        blob = env.seal(key, b"refresh-token", aad=b"credentials|refresh_token|crd_eu_9")
        assert env.open(key, blob, aad=b"credentials|refresh_token|crd_eu_9") == b"refresh-token"
    """

    def __init__(
        self,
        provider: KeyProvider,
        *,
        cache_ttl: float = 300.0,
        cache_size: int = 10_000,
        seal_limit: int = DEFAULT_SEAL_LIMIT,
        seal_counter: SealCounter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self._ttl = cache_ttl
        self._max = cache_size
        self._seal_limit = seal_limit
        # Small limits (tests, paranoid operators) must still be honoured exactly.
        self._block = max(1, min(_SEAL_BLOCK, seal_limit // 64))
        self._counter: SealCounter = seal_counter or MemorySealCounter()
        self._clock = clock
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._misses = self._unwraps = self._evictions = 0
        self._next_sweep = clock() + cache_ttl

    # -- keys ---------------------------------------------------------------

    def new_data_key(self, dek_id: str) -> WrappedKey:
        """Generate a data key for a new subject and keep it cached for immediate use."""
        _check_dek_id(dek_id)
        dk = self.provider.generate_data_key(dek_id)
        self._insert(dek_id, dk.plaintext, dk.wrapped.kek_version)
        return dk.wrapped

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        """Re-wrap under the newest KEK version; the cached entry stays valid."""
        return self.provider.rewrap(wrapped)

    def forget(self, dek_id: str) -> None:
        """Drop a cached key at once: erasure must not wait for the TTL."""
        with self._lock:
            self._cache.pop(dek_id, None)

    def cached_ids(self) -> list[str]:
        """The ids of the data keys cached now (for dropping ones erased elsewhere)."""
        with self._lock:
            return list(self._cache)

    def purge_expired(self) -> int:
        """Drop every entry past its TTL (with its key material); returns how many.

        Expired entries are never used, but until dropped their keys stay in memory: an
        erased user's key among them. :meth:`_insert` calls this at most once per TTL.
        """
        now = self._clock()
        with self._lock:
            expired = [d for d, e in self._cache.items() if e.expires_at <= now]
            for dek_id in expired:
                del self._cache[dek_id]
            self._next_sweep = now + self._ttl
        return len(expired)

    def prepare(self, wrapped: WrappedKey) -> None:
        """Make sure the key is cached (an async caller runs this in a thread)."""
        self._entry(wrapped)

    def is_cached(self, dek_id: str) -> bool:
        entry = self._cache.get(dek_id)
        return entry is not None and entry.expires_at > self._clock()

    def stats(self) -> CacheStats:
        return CacheStats(
            len(self._cache), self._max, self._ttl, self._misses, self._unwraps, self._evictions,
        )

    # -- values -------------------------------------------------------------

    def seal(self, key: WrappedKey, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt ``plaintext`` for the place named by ``aad`` (table, column, row, subject)."""
        entry = self._cache.get(key.dek_id)
        if entry is None or entry.expires_at <= self._clock():
            entry = self._load(key)
        entry.budget -= 1
        if entry.budget < 0:
            self._reserve(key.dek_id, entry)
        try:
            nonce = _next_nonce()
        except IndexError:
            nonce = _refill_nonces()
        header = entry.prefix + _pack_nonce_fingerprint(nonce, _crc32(aad))
        return header + entry.encrypt(nonce, plaintext, header + aad)

    def open(self, key: WrappedKey, blob: bytes, aad: bytes) -> bytes:
        """Decrypt a blob sealed by :meth:`seal` for the same key and the same ``aad``."""
        entry = self._cache.get(key.dek_id)
        if entry is None or entry.expires_at <= self._clock():
            entry = self._load(key)
        end = entry.body_at
        # The prefix (version, id, commitment) is public: a plain comparison leaks nothing.
        if not blob.startswith(entry.prefix) or len(blob) < entry.min_len:
            self._explain_header(key, blob)
        try:
            return entry.decrypt(blob[entry.nonce_at : entry.nonce_end], blob[end:],
                                 blob[:end] + aad)
        except InvalidTag:
            if blob[end - AAD_FINGERPRINT_SIZE : end] != _fingerprint(aad):
                raise AadMismatch(
                    "sealed value was sealed for another place (table, column, row or "
                    "subject); it was probably copied from elsewhere"
                ) from None
            raise TamperedBlob("sealed value failed authentication: it was altered") from None

    @staticmethod
    def _explain_header(key: WrappedKey, blob: bytes) -> None:
        """Slow path for a header that does not match the key: say precisely why."""
        head = parse_header(blob)  # raises for a bad format or a truncated blob
        if head.dek_id != key.dek_id:
            raise WrongDataKey(
                f"sealed value belongs to data key {head.dek_id!r}, not {key.dek_id!r}"
            )
        raise WrongDataKey(
            f"sealed value does not commit to data key {key.dek_id!r}; "
            "it was sealed under another key with the same id"
        )

    # -- internals ----------------------------------------------------------

    def _entry(self, key: WrappedKey) -> _Entry:
        entry = self._cache.get(key.dek_id)
        if entry is None or entry.expires_at <= self._clock():
            entry = self._load(key)
        return entry

    def _load(self, key: WrappedKey) -> _Entry:
        self._misses += 1
        plaintext = self.provider.unwrap(key)
        self._unwraps += 1
        return self._insert(key.dek_id, plaintext, key.kek_version)

    def _insert(self, dek_id: str, plaintext: bytes, kek_version: int) -> _Entry:
        if self._clock() >= self._next_sweep:
            self.purge_expired()
        entry = _Entry(dek_id, plaintext, kek_version, self._clock() + self._ttl)
        with self._lock:
            old = self._cache.pop(dek_id, None)
            if old is not None:
                entry.budget = max(old.budget, 0)
            while len(self._cache) >= self._max:
                self._cache.pop(next(iter(self._cache)))
                self._evictions += 1
            self._cache[dek_id] = entry
        return entry

    def _reserve(self, dek_id: str, entry: _Entry) -> None:
        with self._lock:
            if entry.budget >= 0:
                return  # another thread refilled it meanwhile
            total = self._counter.reserve(dek_id, self._block)
            if total > self._seal_limit:
                entry.budget = -1
                raise SealLimitReached(
                    f"data key {dek_id!r} has sealed {total - self._block} values, the "
                    f"limit is {self._seal_limit}: rotate the subject's data key "
                    "(`aggregator keys rotate-user USER_ID` reseals its values)"
                )
            entry.budget += self._block


def _check_dek_id(dek_id: str) -> None:
    if not (0 < len(dek_id) < 256) or not dek_id.isascii():
        raise ValueError("data-key id must be 1..255 ASCII characters")
