"""``python -m aggregator.bootstrap.certs DIR [--key-owner UID:GID] [NAME ...]``: TLS for
OpenBao on a private network.

Writes ``ca.crt`` (the root the gateway is told to trust, ``keys.ca_cert``), and
``server.crt`` / ``server.key`` for the names given (default ``vault``, ``localhost`` and
127.0.0.1), unless they already exist: re-running keeps the certificates the clients
trust. Keys are ECDSA P-256 and written 0600 (owned by ``--key-owner`` when the server
runs as another user, e.g. OpenBao's image user); the CA's key is not kept, so nothing
else can be issued under it. Replace these with your PKI's certificates when you have one.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = ("vault", "localhost", "127.0.0.1")
VALIDITY = timedelta(days=825)


def make_certificates(directory: Path, names: tuple[str, ...] = DEFAULT_NAMES,
                      key_owner: tuple[int, int] | None = None) -> bool:
    """Create the CA and server certificate in ``directory``; False if they already exist."""
    if (directory / "server.crt").exists() and (directory / "ca.crt").exists():
        return False
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aggregator OpenBao CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True,
              crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
              .issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + VALIDITY)
              .add_extension(x509.SubjectAlternativeName(alt), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    _write(directory / "server.key", key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)
    if key_owner is not None:
        os.chown(directory / "server.key", *key_owner)
    _write(directory / "server.crt", server.public_bytes(pem), 0o644)
    _write(directory / "ca.crt", ca.public_bytes(pem), 0o644)
    return True


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)
    os.chmod(path, mode)


def main(argv: list[str]) -> int:
    owner = None
    if len(argv) >= 3 and argv[1] == "--key-owner":
        uid, _, gid = argv[2].partition(":")
        owner = (int(uid), int(gid or uid))
        argv = [argv[0], *argv[3:]]
    if not argv:
        print("usage: python -m aggregator.bootstrap.certs DIR [--key-owner UID:GID] "
              "[NAME ...]", file=sys.stderr)
        return 2
    made = make_certificates(Path(argv[0]), tuple(argv[1:]) or DEFAULT_NAMES, owner)
    print(f"{argv[0]}: {'certificates created' if made else 'certificates already present'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
