"""The sandbox banks' client signing keys, generated on first use (docs/operations.md,
"Sandbox banks").

The built-in ``sandbox-fapi2`` and ``sandbox-obie`` profiles authenticate with
``private_key_jwt`` and name their key with ``dev_private_key``. No private key ships in
the package — a published key protects nothing and trains people to commit keys — so
each one is generated the first time a gateway or a sandbox bank needs it, as
``{data_dir}/sandbox-keys/NAME.pem`` (directory 0700, file 0600; a looser mode is refused,
as for the local keyring). The gateway signs with it and the sandbox bank registers its
public half: ``aggregator dev`` and ``aggregator demo`` run both on one data directory.

Two processes starting at once agree on one key: each writes a complete candidate to its
own temporary file and links it into place with :func:`os.link`, which never replaces an
existing name, so the first link wins and every other process reads the winner's key.
The profile loader refuses ``dev_private_key`` for a bank that is not on loopback.

Example::

    profiles = resolve_sandbox_keys(load_profiles([]), settings.data_dir)
    signer = sandbox_signer(settings.data_dir, "sandbox-fapi2-client", "ES256")
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aggregator.errors import ConfigError
from connectors import BankProfile, PemSigner

__all__ = ["KEY_DIRECTORY", "resolve_sandbox_keys", "sandbox_key_file", "sandbox_signer"]

#: Where the keys live, under the gateway's data directory.
KEY_DIRECTORY = "sandbox-keys"


def sandbox_key_file(data_dir: Path, name: str, algorithm: str) -> Path:
    """The key file ``name``, created with a new ``algorithm`` key if it does not exist."""
    directory = data_dir / KEY_DIRECTORY
    _private_directory(directory)
    path = directory / f"{name}.pem"
    if not path.exists():
        _create_once(path, _new_key(algorithm))
    _require_private(path)
    return path


def sandbox_signer(
    data_dir: Path, name: str, algorithm: str, key_id: str | None = None
) -> PemSigner:
    """The signer of key ``name`` (generated if need be); its public JWK is what the
    sandbox bank registers for the client."""
    pem = sandbox_key_file(data_dir, name, algorithm).read_bytes()
    try:
        return PemSigner.from_pem(pem, algorithm=algorithm, key_id=key_id)
    except ValueError as exc:
        raise ConfigError(f"{data_dir / KEY_DIRECTORY / name}.pem: {exc}; delete the file "
                          "to have a new sandbox key generated") from None


def resolve_sandbox_keys(
    profiles: Mapping[str, BankProfile], data_dir: Path
) -> dict[str, BankProfile]:
    """``profiles`` with every ``dev_private_key`` generated and set as ``private_key_file``."""
    resolved = dict(profiles)
    for bank_id, profile in profiles.items():
        if profile.dev_private_key is not None and profile.private_key_file is None:
            assert profile.signing_alg is not None  # the loader requires it with the key
            path = sandbox_key_file(data_dir, profile.dev_private_key, profile.signing_alg)
            resolved[bank_id] = dataclasses.replace(profile, private_key_file=path)
    return resolved


def _new_key(algorithm: str) -> bytes:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "PS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ConfigError(f"no sandbox key type for signing algorithm {algorithm!r}")
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _create_once(path: Path, pem: bytes) -> None:
    # A complete candidate first, then link(2): atomic and never replacing, so concurrent
    # starters cannot see a half-written key nor end up with two different ones.
    candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(candidate, path)
    finally:
        candidate.unlink(missing_ok=True)


def _private_directory(directory: Path) -> None:
    if not directory.parent.exists():
        directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    except FileExistsError:
        pass
    _require_private(directory)


def _require_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        want = "0700" if path.is_dir() else "0600"
        raise ConfigError(f"{path} has mode {mode:04o}: other users could read the sandbox "
                          f"client key; chmod {want} it")
