"""DPoP proofs (RFC 9449), server side: the checks a strict bank makes, and its nonces.

:class:`ProofVerifier` runs every check of §4.3 on one ``DPoP`` header: a well-formed
JWS whose ``typ`` is ``dpop+jwt``, an asymmetric ``alg`` we accept (never ``none`` or
HMAC), a public ``jwk`` (no private members) that verifies the signature, ``htm`` and
``htu`` equal to the request's method and URI (without query and fragment), ``iat``
within a window, a ``jti`` never seen before in that window, the server's current
``nonce`` when it demands one (§8, §9), and ``ath`` equal to the hash of the access
token presented with it (§4.3 check 11). Failures are :class:`ProofRefused` with the
error code the bank answers (``invalid_dpop_proof`` or ``use_dpop_nonce``).

:class:`NonceSource` issues the server's nonces: unpredictable, rotated every
``ttl`` seconds of the sandbox clock, the previous one still accepted so a client in
flight during a rotation is not refused twice.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key

from aggregator.sandbox.store import SandboxClock

#: Proof algorithms the sandbox accepts (FAPI 2.0 Security Profile §5.4).
PROOF_ALGORITHMS: tuple[str, ...] = ("ES256", "EdDSA", "PS256")
#: How far ``iat`` may be from the server's clock, either way (§11.1 suggests seconds to
#: minutes; a small window bounds the replay cache).
IAT_WINDOW = 60
#: A PS256 proof's header carries a 2048-bit RSA jwk (~450 bytes encoded, more with 4096).
_MAX_HEADER = 2048


class ProofRefused(Exception):
    """A proof the server refuses; ``error`` is the code for the answer (§7.1, §8)."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class VerifiedProof:
    """A proof that passed every check: the thumbprint of its key (``jkt``)."""

    jkt: str
    jti: str


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"),
                "RSA": ("e", "kty", "n")}[jwk["kty"]]
    canonical = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return _b64(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(access_token: str) -> str:
    return _b64(hashlib.sha256(access_token.encode("ascii")).digest())


class NonceSource:
    """The server's DPoP nonces (§8.1 for the authorization server, §9 for resources)."""

    def __init__(self, clock: SandboxClock, ttl: float = 300.0) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._ttl = ttl
        self._current = secrets.token_urlsafe(18)
        self._previous: str | None = None
        self._rotated_at = clock.now()

    def current(self) -> str:
        with self._lock:
            if self._clock.now() - self._rotated_at >= self._ttl:
                self._previous, self._current = self._current, secrets.token_urlsafe(18)
                self._rotated_at = self._clock.now()
            return self._current

    def rotate(self) -> str:
        """A new nonce now; the old ones stop working (tests prove the client follows)."""
        with self._lock:
            self._previous, self._current = None, secrets.token_urlsafe(18)
            self._rotated_at = self._clock.now()
            return self._current

    def accepts(self, nonce: object) -> bool:
        current = self.current()
        return isinstance(nonce, str) and nonce in (current, self._previous)


class ProofVerifier:
    """Checks proofs and remembers their ``jti`` for :data:`IAT_WINDOW` either way."""

    def __init__(self, nonces: NonceSource | None) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}
        self.nonces = nonces

    def verify(
        self, proof: str, *, method: str, uri: str, access_token: str | None = None
    ) -> VerifiedProof:
        header, claims = self._signed_parts(proof)
        if claims.get("htm") != method:
            raise ProofRefused("invalid_dpop_proof", "htm does not match the request method")
        if claims.get("htu") != uri:
            raise ProofRefused("invalid_dpop_proof", "htu does not match the request URI")
        iat = claims.get("iat")
        # Real time: proofs carry wall-clock `iat`; the sandbox clock only ages tokens.
        if not isinstance(iat, int) or abs(time.time() - iat) > IAT_WINDOW:
            raise ProofRefused("invalid_dpop_proof", "iat is outside the accepted window")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not secrets.compare_digest(
                ath, access_token_hash(access_token)
            ):
                raise ProofRefused("invalid_dpop_proof", "ath does not match the access token")
        elif "ath" in claims:
            raise ProofRefused("invalid_dpop_proof", "ath without an access token")
        if self.nonces is not None and not self.nonces.accepts(claims.get("nonce")):
            raise ProofRefused("use_dpop_nonce", "a current DPoP nonce is required")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 16 <= len(jti) <= 128:
            raise ProofRefused("invalid_dpop_proof", "jti is missing or malformed")
        jkt = thumbprint(header["jwk"])
        self._claim(jkt, jti, float(iat))
        return VerifiedProof(jkt, jti)

    def _signed_parts(self, proof: str) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            header = json.loads(_unb64(proof.split(".")[0]))
        except (ValueError, IndexError):
            raise ProofRefused("invalid_dpop_proof", "not a compact JWS") from None
        if not isinstance(header, dict) or header.get("typ") != "dpop+jwt":
            raise ProofRefused("invalid_dpop_proof", "typ is not dpop+jwt")
        alg, jwk = header.get("alg"), header.get("jwk")
        if alg not in PROOF_ALGORITHMS:
            raise ProofRefused("invalid_dpop_proof", "alg is not an accepted asymmetric one")
        if not isinstance(jwk, dict) or any(k in jwk for k in ("d", "p", "q", "dp", "dq", "qi")):
            raise ProofRefused("invalid_dpop_proof", "jwk is missing or holds a private key")
        try:
            key = import_key(jwk)
            if not isinstance(key, ECKey | OKPKey | RSAKey):
                raise ProofRefused("invalid_dpop_proof", "jwk is not an asymmetric key")
            thumbprint(jwk)
            with warnings.catch_warnings():
                # RFC 9864 deprecates the polymorphic "EdDSA" name in favour of "Ed25519";
                # FAPI 2.0 (§5.4) and RFC 9449 clients still send EdDSA.
                warnings.simplefilter("ignore", SecurityWarning)
                registry = jws.JWSRegistry(algorithms=[alg])
                registry.max_header_length = _MAX_HEADER  # an RSA jwk exceeds the default
                verified = jws.deserialize_compact(proof, key, registry=registry)
            claims = json.loads(verified.payload)
        except (JoseError, ValueError, KeyError, TypeError):
            raise ProofRefused("invalid_dpop_proof", "the signature does not verify") from None
        if not isinstance(claims, dict):
            raise ProofRefused("invalid_dpop_proof", "the claims are not a JSON object")
        return header, claims

    def _claim(self, jkt: str, jti: str, iat: float) -> None:
        """§11.1: a proof is single-use; remembered until it would be too old anyway."""
        now = time.time()
        with self._lock:
            for key in [k for k, until in self._seen.items() if until < now]:
                del self._seen[key]
            slot = f"{jkt}/{jti}"
            if slot in self._seen:
                raise ProofRefused("invalid_dpop_proof", "the proof was already used (jti)")
            self._seen[slot] = iat + 2 * IAT_WINDOW


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
