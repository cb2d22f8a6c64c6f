"""``private_key_jwt`` client authentication: RFC 7523 §2.2 and §3.

The assertion follows the current guidance rather than the 2015 text: its audience is
the authorization server's issuer identifier as a plain string, not the endpoint URL
(draft-ietf-oauth-rfc7523bis; RFC 7523 §3 allowed either). One assertion is valid for
every endpoint (token, PAR, revocation) and an assertion replayed at another server is
refused there. Only PS256 and ES256 are produced (FAPI 2.0 §5.4): RS256 has PKCS#1 v1.5
padding, and HMAC assertions would share the secret with the bank.

Keys sit behind :class:`Signer` so a vault- or HSM-held key can replace the PEM file
without touching the OAuth client.
"""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime, timedelta
from typing import Final, Protocol, runtime_checkable

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from vault import Secret

__all__ = [
    "ASSERTION_TYPE",
    "MAX_ASSERTION_LIFETIME",
    "PemSigner",
    "Signer",
    "build_client_assertion",
]

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Short-lived on purpose: a leaked assertion is replayable until it expires.
MAX_ASSERTION_LIFETIME: Final = timedelta(seconds=60)
ALGORITHMS: Final = ("PS256", "ES256")


@runtime_checkable
class Signer(Protocol):
    """Signs JWS signing input with a private key the caller never sees.

    `algorithm` is ``"PS256"`` or ``"ES256"``; `key_id` (or None) goes in the JWS
    ``kid`` header. `sign` returns the JWS signature bytes: for ES256 the 64-byte
    ``R || S`` form of RFC 7518 §3.4, not DER. It is async so a remote key (Vault
    Transit, an HSM) fits. Example of a stand-in::

        class VaultSigner:
            algorithm = "ES256"
            key_id = "bank-client-2025"
            async def sign(self, message: bytes) -> bytes:
                return await transit_sign(message)
    """

    @property
    def algorithm(self) -> str: ...

    @property
    def key_id(self) -> str | None: ...

    async def sign(self, message: bytes) -> bytes: ...


class PemSigner:
    """A :class:`Signer` over a PEM private key held in process memory.

    The algorithm follows the key (RSA → PS256, P-256 → ES256) unless given; a key that
    cannot produce the requested algorithm is refused here, at start-up.
    """

    def __init__(
        self,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
        *,
        algorithm: str | None = None,
        key_id: str | None = None,
    ) -> None:
        expected = "PS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
        algorithm = algorithm or expected
        if algorithm not in ALGORITHMS:
            raise ValueError(f"unsupported signing algorithm {algorithm!r}; use PS256 or ES256")
        if algorithm != expected:
            raise ValueError(f"{algorithm} needs an {'RSA' if algorithm == 'PS256' else 'EC'} key")
        if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
            raise ValueError("RSA keys for PS256 must have at least 2048 bits")
        if isinstance(key, ec.EllipticCurvePrivateKey) and not isinstance(key.curve, ec.SECP256R1):
            raise ValueError("ES256 needs a P-256 key")
        self._key = key
        self._algorithm = algorithm
        self._key_id = key_id

    @classmethod
    def from_pem(
        cls,
        pem: bytes | str | Secret,
        *,
        algorithm: str | None = None,
        key_id: str | None = None,
        password: Secret | None = None,
    ) -> PemSigner:
        data = pem.reveal() if isinstance(pem, Secret) else pem
        raw = data.encode() if isinstance(data, str) else data
        try:
            key = serialization.load_pem_private_key(
                raw, password.reveal().encode() if password else None
            )
        except (ValueError, TypeError, UnsupportedAlgorithm):
            # The library's message may quote the input; ours must not.
            raise ValueError("not a readable PEM private key") from None
        if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            raise ValueError("private_key_jwt needs an RSA or EC P-256 private key")
        return cls(key, algorithm=algorithm, key_id=key_id)

    @property
    def algorithm(self) -> str:
        return self._algorithm

    @property
    def key_id(self) -> str | None:
        return self._key_id

    async def sign(self, message: bytes) -> bytes:
        if isinstance(self._key, rsa.RSAPrivateKey):
            # RFC 7518 §3.5: PSS with MGF1-SHA256 and a salt as long as the hash.
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
            return self._key.sign(message, pss, hashes.SHA256())
        r, s = decode_dss_signature(self._key.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_jwk(self) -> dict[str, str | list[str]]:
        """The public key as a JWK, to register at a bank (or at the sandbox)."""
        jwk: dict[str, str | list[str]] = {"use": "sig", "alg": self._algorithm}
        if self._key_id:
            jwk["kid"] = self._key_id
        public = self._key.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            jwk |= {"kty": "RSA", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}
        else:
            point = public.public_numbers()
            jwk |= {
                "kty": "EC",
                "crv": "P-256",
                "x": _b64(point.x.to_bytes(32, "big")),
                "y": _b64(point.y.to_bytes(32, "big")),
            }
        return jwk

    def __repr__(self) -> str:
        return f"PemSigner(algorithm={self._algorithm!r}, key_id={self._key_id!r})"


async def build_client_assertion(
    signer: Signer,
    *,
    client_id: str,
    audience: str,
    now: datetime,
    lifetime: timedelta = MAX_ASSERTION_LIFETIME,
) -> str:
    """A signed client assertion (RFC 7523 §3) for one request.

    ``iss`` and ``sub`` are the client id; ``aud`` is `audience` (the issuer) as a
    single string; ``jti`` is fresh so the server can refuse replays; ``exp`` is at
    most 60 seconds away.
    """
    if not timedelta(0) < lifetime <= MAX_ASSERTION_LIFETIME:
        raise ValueError("assertion lifetime must be between 0 and 60 seconds")
    if signer.algorithm not in ALGORITHMS:
        raise ValueError(f"signer algorithm {signer.algorithm!r} is not PS256 or ES256")
    header: dict[str, str] = {"alg": signer.algorithm, "typ": "JWT"}
    if signer.key_id:
        header["kid"] = signer.key_id
    issued = int(now.timestamp())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "jti": secrets.token_urlsafe(24),
        "iat": issued,
        "exp": issued + int(lifetime.total_seconds()),
    }
    signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode("ascii")
    signature = await signer.sign(signing_input)
    return f"{signing_input.decode('ascii')}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_json(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))
