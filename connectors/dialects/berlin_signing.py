"""Signing NextGenPSD2 requests with a QSealC (Implementation Guidelines v1.3.x §12, errata).

Some Berlin Group banks want every XS2A request sealed with the TPP's eIDAS qualified
seal certificate, as draft-cavage-http-signatures-10 describes and the guidelines (with
the v1.3 errata) profile it:

- ``Digest``: ``SHA-256=`` and the base64 SHA-256 of the body (of the empty string for a
  GET), RFC 3230;
- ``Signature``: ``keyId="SN=<serial, hex>,CA=<issuer DN>"``, ``algorithm="rsa-sha256"``
  (RSASSA-PKCS1-v1_5 with SHA-256), ``headers`` naming what was signed — always
  ``digest`` and ``x-request-id``, and ``psu-id``, ``psu-corporate-id`` and
  ``tpp-redirect-uri`` when the request carries them (names lower case, in that order),
  and ``signature``: base64 over the lines ``name: value`` joined by ``\\n``;
- ``TPP-Signature-Certificate``: the QSealC, base64 DER.

The private key stays behind the :class:`~connectors.oauth.rfc7523.Signer` seam (a PEM
file here; Vault Transit or an HSM through another ``Signer`` whose ``algorithm`` is
``"RS256"``). :class:`QsealSeal` is an ``httpx`` request hook on the bank's own client,
so the dialect's GETs and the consent calls are sealed alike, and only requests under
the bank's XS2A base URL are (its OAuth server is not an XS2A interface).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Final

import httpx
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from connectors.errors import ProfileError
from connectors.oauth.rfc7523 import Signer

if TYPE_CHECKING:
    from connectors.profiles import BankProfile

__all__ = ["RS256", "QsealSeal", "RsaPkcs1Signer", "request_hooks", "signing_string"]

#: The ``Signer.algorithm`` a QSealC seal needs: RSASSA-PKCS1-v1_5 with SHA-256.
RS256: Final = "RS256"
#: Headers signed when present, after ``digest`` and ``x-request-id`` (guidelines §12.2).
_CONDITIONAL: Final = ("psu-id", "psu-corporate-id", "tpp-redirect-uri")

RequestHook = Callable[[httpx.Request], Awaitable[None]]


class RsaPkcs1Signer:
    """A :class:`~connectors.oauth.rfc7523.Signer` over an RSA PEM key, RS256.

    Only for QSealC seals: JWS assertions use PS256 (``PemSigner``), whereas the
    guidelines' ``rsa-sha256`` is PKCS#1 v1.5.
    """

    algorithm = RS256
    key_id: str | None = None

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        if key.key_size < 2048:
            raise ValueError("a QSealC key needs at least 2048 bits")
        self._key = key

    @classmethod
    def from_pem(cls, pem: bytes) -> RsaPkcs1Signer:
        try:
            key = serialization.load_pem_private_key(pem, None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError("not a readable PEM private key") from None  # never quote it
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("a QSealC seal needs an RSA private key")
        return cls(key)

    async def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def __repr__(self) -> str:
        return "RsaPkcs1Signer()"


def digest_of(body: bytes) -> str:
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def signed_names(headers: Mapping[str, str]) -> list[str]:
    lower = {k.lower() for k in headers}
    return ["digest", "x-request-id", *(n for n in _CONDITIONAL if n in lower)]


def signing_string(headers: Mapping[str, str], names: list[str]) -> bytes:
    """draft-cavage-http-signatures-10 §2.3: ``name: value`` lines, names lower case."""
    folded = {k.lower(): v for k, v in headers.items()}
    return "\n".join(f"{name}: {folded[name]}" for name in names).encode()


class QsealSeal:
    """Seals every request under ``prefix`` (an httpx ``request`` event hook).

    Example::

        seal = QsealSeal(RsaPkcs1Signer.from_pem(pem), certificate, "https://x.bank/psd2")
        client = httpx.AsyncClient(event_hooks={"request": [seal]})
    """

    def __init__(self, signer: Signer, certificate: x509.Certificate, prefix: str) -> None:
        if signer.algorithm != RS256:
            raise ValueError("a QSealC seal signs rsa-sha256: the signer must be RS256")
        if not isinstance(certificate.public_key(), rsa.RSAPublicKey):
            raise ValueError("the QSealC must carry an RSA public key")
        self._signer = signer
        self._prefix = prefix.rstrip("/") + "/"
        self.key_id = f"SN={certificate.serial_number:X},CA={certificate.issuer.rfc4514_string()}"
        self._certificate = base64.b64encode(
            certificate.public_bytes(serialization.Encoding.DER)).decode("ascii")

    async def __call__(self, request: httpx.Request) -> None:
        if not str(request.url).startswith(self._prefix):
            return
        if "x-request-id" not in request.headers:
            raise ValueError("a sealed NextGenPSD2 request needs X-Request-ID")
        request.headers["Digest"] = digest_of(request.content)
        names = signed_names(request.headers)
        signature = await self._signer.sign(signing_string(request.headers, names))
        request.headers["Signature"] = (
            f'keyId="{self.key_id}",algorithm="rsa-sha256",headers="{" ".join(names)}",'
            f'signature="{base64.b64encode(signature).decode("ascii")}"')
        request.headers["TPP-Signature-Certificate"] = self._certificate

    def __repr__(self) -> str:
        return f"QsealSeal(key_id={self.key_id!r})"


def request_hooks(profile: BankProfile, environ: Mapping[str, str] | None = None
                  ) -> list[RequestHook]:
    """The request hooks a bank profile asks for: a QSealC seal, or none."""
    options = profile.berlin_group
    certificate_file = None if options is None else options.signing_certificate_file
    if options is None or certificate_file is None:
        return []
    source = str(profile.source)
    try:
        certificate = x509.load_pem_x509_certificate(certificate_file.read_bytes())
    except (OSError, ValueError):
        raise ProfileError(source, "berlin_group.signing_certificate_file",
                           "not a readable PEM certificate") from None
    env = os.environ if environ is None else environ
    key_env = options.signing_key_pem_env
    try:
        if key_env:
            pem = env[key_env].encode()
        else:
            assert options.signing_key_file is not None  # the loader demands one of the two
            pem = options.signing_key_file.read_bytes()
        seal = QsealSeal(RsaPkcs1Signer.from_pem(pem), certificate, profile.api.base_url)
    except KeyError:
        raise ProfileError(source, "berlin_group.signing_key_pem_env",
                           f"environment variable {key_env} is not set") from None
    except (OSError, ValueError) as exc:
        raise ProfileError(source, "berlin_group.signing_key_file", str(exc)) from None
    return [seal]
