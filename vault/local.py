"""The local keyring: KEKs in files, for development and single-machine installs.

Layout, one directory per KEK (one KEK per region)::

    {directory}/                 mode 0700
        {kek_id}/                mode 0700
            v1.key, v2.key, …    32 random bytes each, mode 0600
            policy.json          {"min_decryption_version": N}, mode 0600

A data key is wrapped with AES-256-GCM under the newest KEK version; the associated
data binds the wrapping to the KEK id, its version and the data-key id, so a wrapped key
copied to another user's row does not unwrap. Stored ciphertext is ``nonce ‖ ct ‖ tag``.

This is a development stand-in: the KEK sits on the same disk as the data. The gateway
warns when it is combined with a PostgreSQL store; production uses an HSM or Vault.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Sequence
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vault.config import LocalKeyringConfig
from vault.errors import (
    DataKeyDestroyed,
    InsecureKeyStore,
    KekVersionRetired,
    ProviderMisconfigured,
    ProviderUnavailable,
    TamperedBlob,
)
from vault.interfaces import DataKey, KekStatus, WrappedKey

_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.key$")
_KEK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class LocalKeyring:
    """KeyProvider over files; refuses to run if others can read the files."""

    kind = "local"

    def __init__(self, config: LocalKeyringConfig) -> None:
        if not _KEK_ID.match(config.kek_id):
            raise ProviderMisconfigured(
                f"local keyring: kek_id {config.kek_id!r} must be letters, digits, '_', '.', '-'"
            )
        self.kek_id = config.kek_id
        self._root = config.directory
        self._dir = config.directory / config.kek_id
        self._lock = threading.Lock()
        self._keks: dict[int, AESGCM] = {}

    # -- KeyProvider --------------------------------------------------------

    def ensure_kek(self) -> None:
        with self._lock:
            for d in (self._root, self._dir):
                _make_private_dir(d)
            self._check_permissions()
            if not self._versions():
                self._write_version(1)

    def generate_data_key(self, dek_id: str) -> DataKey:
        plaintext = AESGCM.generate_key(bit_length=256)
        return DataKey(plaintext, self._wrap(dek_id, plaintext))

    def unwrap(self, wrapped: WrappedKey) -> bytes:
        self._check_wrapped(wrapped)
        if wrapped.kek_version < self._min_version():
            raise KekVersionRetired(
                f"data key {wrapped.dek_id!r} is wrapped under KEK {self.kek_id!r} version "
                f"{wrapped.kek_version}, below the minimum decryption version; lower the "
                "minimum or restore from a rewrapped copy"
            )
        ct = wrapped.ciphertext
        try:
            return self._kek(wrapped.kek_version).decrypt(
                ct[:12], ct[12:], _aad(self.kek_id, wrapped.kek_version, wrapped.dek_id)
            )
        except (InvalidTag, ValueError):
            raise TamperedBlob(
                f"wrapped data key {wrapped.dek_id!r} does not open under KEK "
                f"{self.kek_id!r} v{wrapped.kek_version}: it was altered or moved"
            ) from None

    def rewrap(self, wrapped: WrappedKey) -> WrappedKey:
        return self._wrap(wrapped.dek_id, self.unwrap(wrapped))

    def rewrap_many(self, wrapped: Sequence[WrappedKey]) -> list[WrappedKey]:
        return [self.rewrap(w) for w in wrapped]

    def rotate(self) -> int:
        with self._lock:
            self._check_permissions()
            version = self._latest() + 1
            self._write_version(version)
            return version

    def set_min_decryption_version(self, version: int) -> None:
        latest = self._latest()
        if not 1 <= version <= latest:
            raise ValueError(f"minimum decryption version must be within 1..{latest}")
        _write_private(self._dir / "policy.json", json.dumps(
            {"min_decryption_version": version}).encode())

    def status(self) -> KekStatus:
        self._check_permissions()
        versions = tuple(sorted(self._versions()))
        return KekStatus(
            provider=self.kind,
            kek_id=self.kek_id,
            latest_version=max(versions, default=0),
            min_decryption_version=self._min_version(),
            versions=versions,
            details={"directory": str(self._dir)},
        )

    def close(self) -> None:
        self._keks.clear()

    # -- internals ----------------------------------------------------------

    def _wrap(self, dek_id: str, plaintext: bytes) -> WrappedKey:
        version = self._latest()
        nonce = os.urandom(12)
        ct = self._kek(version).encrypt(nonce, plaintext, _aad(self.kek_id, version, dek_id))
        return WrappedKey(dek_id, self.kind, self.kek_id, version, nonce + ct)

    def _check_wrapped(self, wrapped: WrappedKey) -> None:
        if wrapped.provider != self.kind or wrapped.kek_id != self.kek_id:
            raise DataKeyDestroyed(
                f"data key {wrapped.dek_id!r} is wrapped by {wrapped.provider}:"
                f"{wrapped.kek_id}, not by this keyring ({self.kind}:{self.kek_id})"
            )

    def _kek(self, version: int) -> AESGCM:
        aead = self._keks.get(version)
        if aead is None:
            path = self._dir / f"v{version}.key"
            try:
                self._check_permissions()
                raw = path.read_bytes()
            except FileNotFoundError:
                raise DataKeyDestroyed(
                    f"KEK {self.kek_id!r} version {version} does not exist in {self._dir}"
                ) from None
            except OSError as exc:
                raise ProviderUnavailable(f"cannot read {path}: {exc.strerror}") from None
            if len(raw) != 32:
                raise ProviderMisconfigured(f"{path} is not a 32-byte AES-256 key")
            aead = self._keks[version] = AESGCM(raw)
        return aead

    def _latest(self) -> int:
        versions = self._versions()
        if not versions:
            raise ProviderMisconfigured(
                f"local keyring {self._dir} has no KEK yet: run `aggregator keys init`"
            )
        return max(versions)

    def _versions(self) -> list[int]:
        try:
            names = os.listdir(self._dir)
        except FileNotFoundError:
            return []
        return [int(m.group(1)) for n in names if (m := _VERSION_FILE.match(n))]

    def _min_version(self) -> int:
        try:
            policy = json.loads((self._dir / "policy.json").read_bytes())
        except FileNotFoundError:
            return 1
        except (OSError, ValueError) as exc:
            raise ProviderMisconfigured(f"{self._dir / 'policy.json'} is unreadable") from exc
        version = policy.get("min_decryption_version", 1)
        if not isinstance(version, int) or version < 1:
            raise ProviderMisconfigured(
                f"{self._dir / 'policy.json'}: min_decryption_version must be a positive integer"
            )
        return version

    def _write_version(self, version: int) -> None:
        """Write ``vN.key`` whole or not at all: a crash never leaves a short key file.

        The key goes to a temp file of this process first, is fsynced, then hard-linked
        to its name (``link`` fails if the name exists, so of two processes rotating at
        once exactly one key stands) and the directory is fsynced so the new name
        survives a power loss. Written in place, a crash could leave a 0-byte ``vN.key``
        that every later rotation and new user would trip over.
        """
        path = self._dir / f"v{version}.key"
        tmp = self._dir / f".v{version}.key.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(AESGCM.generate_key(bit_length=256))
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(FileExistsError):  # another process rotated: its key
                os.link(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        _fsync_dir(self._dir)

    def _check_permissions(self) -> None:
        uid = os.getuid()
        paths = [self._root, self._dir]
        with contextlib.suppress(FileNotFoundError):
            paths += [self._dir / n for n in os.listdir(self._dir)]
        for path in paths:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if st.st_uid != uid:
                raise InsecureKeyStore(
                    f"{path} is owned by uid {st.st_uid}, not by this process (uid {uid}); "
                    "chown it to the gateway's user"
                )
            if stat.S_IMODE(st.st_mode) & 0o077:
                want = "0700" if stat.S_ISDIR(st.st_mode) else "0600"
                raise InsecureKeyStore(
                    f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: other users could read "
                    f"the key-encryption keys. Run `chmod {want} {path}` and start again"
                )


def _aad(kek_id: str, version: int, dek_id: str) -> bytes:
    return f"aggregator/local-wrap/v1|{kek_id}|{version}|{dek_id}".encode()


def _make_private_dir(path: Path) -> None:
    # Every directory created here is 0700, the missing parents too (the data directory
    # also holds the SQLite stores); existing ones keep the mode the operator gave them.
    for directory in [*reversed(path.parents), path]:
        if not directory.exists():
            directory.mkdir(mode=0o700)
            os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename or link in ``path`` durable (POSIX: fsync the directory)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
