"""Demonstrating Proof of Possession (DPoP, RFC 9449), client side.

A FAPI 2.0 bank (Security Profile §5.3.2.2) binds its tokens to a key of the client's:
each request carries a fresh proof JWT signed with that key, so a stolen access or
refresh token is useless without it. This module provides:

- :class:`DPoPKey`: one key pair and its proofs (§4.2): header ``typ`` ``dpop+jwt``,
  ``alg`` and the public ``jwk``; claims ``jti`` (fresh per proof), ``htm``, ``htu``
  (the target URI without query and fragment, §4.3 check 9), ``iat``, and where they
  apply ``ath`` (the access token's hash, §4.3 check 11) and ``nonce`` (§8, §9).
  ES256 by default; EdDSA (Ed25519) or PS256 when the bank's
  ``dpop_signing_alg_values_supported`` lists only those (:func:`choose_algorithm`).
- :class:`DPoPNonces`: the newest ``DPoP-Nonce`` each server handed out (§8.2 lets a
  server send a fresh one on any answer), per server origin and role (authorization
  server and resource server nonces are separate, §9).
- :class:`DPoPAuth`: an ``httpx.Auth`` for resource calls: ``Authorization: DPoP`` plus
  the proof, and exactly one retry when the resource server answers 401 with
  ``WWW-Authenticate: DPoP error="use_dpop_nonce"`` and a new nonce (§9). A proof the
  server refuses for any other reason is never retried, and a second nonce demand in a
  row is returned as it came: at most two requests leave per call.
- :func:`nonce_demanded`: a resource server's nonce demand (§9); the token endpoint's
  (``use_dpop_nonce`` as an OAuth error, §8) is handled by the OAuth client.

Where the key lives (the gateway's choice, see ``aggregator/link/grants.py``): one key
per connection, generated when the user picks the bank, carried sealed in the pending
authorization and then sealed with the credential under the user's data key. A
per-region key in the KMS was the alternative; it was rejected because (1) a token
leaked with its connection's row would be usable with a key shared by every connection
of the region, while per-connection keys confine a compromise to one grant; (2) the
proof key must die with the user (erasure destroys the data key, so the sealed DPoP key
and every token bound to it become unusable together); (3) Vault Transit signs ES256 but
SoftHSM2 cannot hash-and-sign ECDSA inside the token, and a KMS round trip per resource
call would put the KMS on every sync's path; a key generated per link costs ~50 µs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Callable, Generator, Sequence
from datetime import UTC, datetime
from typing import Final

import httpx
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from connectors.errors import BankUnsupported

__all__ = [
    "DPOP_ALGORITHMS",
    "DPoPAuth",
    "DPoPKey",
    "DPoPNonces",
    "access_token_hash",
    "choose_algorithm",
    "nonce_demanded",
    "target_uri",
]

#: What we can sign proofs with, in order of preference (FAPI 2.0 §5.4: PS256, ES256 or
#: EdDSA only). ES256 keys are small and fast, so proofs stay cheap on every call.
DPOP_ALGORITHMS: Final = ("ES256", "EdDSA", "PS256")
PROOF_TYPE: Final = "dpop+jwt"
#: RFC 9449 §7.1: the authentication scheme of a DPoP-bound access token.
TOKEN_TYPE: Final = "DPoP"  # noqa: S105 - an authentication scheme name
#: §8.1: printable ASCII without quote or backslash ("NQCHAR").
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_NONCE = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]{1,512}")

DPoPPrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def choose_algorithm(supported: Sequence[str] | None) -> str:
    """The proof algorithm for a server advertising ``supported`` (None: not advertised).

    Not advertised means ES256 (every FAPI 2.0 server accepts it). Otherwise the first
    of :data:`DPOP_ALGORITHMS` the server lists; none in common is
    :class:`~connectors.errors.BankUnsupported`.
    """
    if not supported:
        return "ES256"
    for alg in DPOP_ALGORITHMS:
        if alg in supported:
            return alg
    listed = ", ".join(a for a in supported if isinstance(a, str))[:120]
    raise BankUnsupported(f"no DPoP signing algorithm in common (the bank accepts {listed})")


def target_uri(url: str | httpx.URL) -> str:
    """``htu``: the request URI without query and fragment (§4.2, §4.3 check 9)."""
    parsed = httpx.URL(str(url))
    return str(parsed.copy_with(query=None, fragment=None))


def access_token_hash(access_token: str) -> str:
    """``ath``: base64url SHA-256 of the access token's ASCII bytes (§4.2)."""
    return _b64(hashlib.sha256(access_token.encode("ascii")).digest())


class DPoPKey:
    """One DPoP key pair; its private half never leaves the object except sealed.

    Example::

        key = DPoPKey.generate("ES256")
        proof = key.proof("POST", "https://bank.example/token", nonce=None)
        stored = key.private_bytes()          # seal this, never log it
        again = DPoPKey.from_private_bytes(stored)
        assert again.thumbprint == key.thumbprint
    """

    def __init__(self, key: DPoPPrivateKey) -> None:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            if not isinstance(key.curve, ec.SECP256R1):
                raise ValueError("a DPoP EC key must be P-256 (ES256)")
            self.algorithm = "ES256"
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self.algorithm = "EdDSA"
        elif isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < 2048:
                raise ValueError("a DPoP RSA key needs at least 2048 bits")
            self.algorithm = "PS256"
        else:  # pragma: no cover - the type union says it all
            raise ValueError("unsupported DPoP key type")
        self._key = key
        self.public_jwk: dict[str, str] = _public_jwk(key)
        self.thumbprint: str = jwk_thumbprint(self.public_jwk)

    @classmethod
    def generate(cls, algorithm: str = "ES256") -> DPoPKey:
        if algorithm == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if algorithm == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        if algorithm == "PS256":
            return cls(rsa.generate_private_key(public_exponent=65537, key_size=2048))
        raise ValueError(f"unsupported DPoP algorithm {algorithm!r}")

    @classmethod
    def from_private_bytes(cls, data: bytes | str) -> DPoPKey:
        """Re-open a key stored with :meth:`private_bytes` (PKCS#8 PEM)."""
        raw = data.encode("ascii") if isinstance(data, str) else data
        try:
            key = serialization.load_pem_private_key(raw, None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError("not a readable DPoP private key") from None  # never echo it
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
                          | rsa.RSAPrivateKey):
            raise ValueError("unsupported DPoP key type")
        return cls(key)

    def private_bytes(self) -> bytes:
        """PKCS#8 PEM, unencrypted: the caller seals it (``aggregator.sealing``)."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def proof(
        self,
        method: str,
        url: str | httpx.URL,
        *,
        access_token: str | None = None,
        nonce: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """A fresh proof JWT for one request (§4.2); a new ``jti`` every time."""
        header = {"typ": PROOF_TYPE, "alg": self.algorithm, "jwk": self.public_jwk}
        claims: dict[str, str | int] = {
            "jti": secrets.token_urlsafe(24),
            "htm": method.upper(),
            "htu": target_uri(url),
            "iat": int((now or datetime.now(UTC)).timestamp()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode("ascii")
        return f"{signing_input.decode('ascii')}.{_b64(self._sign(signing_input))}"

    def _sign(self, message: bytes) -> bytes:
        key = self._key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            r, s = decode_dss_signature(key.sign(message, ec.ECDSA(hashes.SHA256())))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")  # RFC 7518 §3.4
        if isinstance(key, ed25519.Ed25519PrivateKey):
            return key.sign(message)  # RFC 8037 §3.1
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)  # RFC 7518 §3.5
        return key.sign(message, pss, hashes.SHA256())

    def __repr__(self) -> str:
        return f"DPoPKey(algorithm={self.algorithm!r}, jkt={self.thumbprint!r})"


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members, sorted, no whitespace."""
    required = {
        "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x"), "RSA": ("e", "kty", "n")
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return _b64(hashlib.sha256(canonical).digest())


class DPoPNonces:
    """The newest nonce per (role, origin); thread-safe, shared by a bank's connections.

    A nonce belongs to the server that issued it, not to a key or a token (§8, §9), so
    one cache per bank serves every connection: after the first demand, calls carry the
    nonce and need no retry until the server rotates it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._nonces: dict[tuple[str, str], str] = {}

    @staticmethod
    def _slot(role: str, url: str | httpx.URL) -> tuple[str, str]:
        parsed = httpx.URL(str(url))
        return role, f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"

    def get(self, role: str, url: str | httpx.URL) -> str | None:
        with self._lock:
            return self._nonces.get(self._slot(role, url))

    def learn(self, role: str, url: str | httpx.URL, response: httpx.Response) -> str | None:
        """Keep the answer's ``DPoP-Nonce`` if it is well formed; return it (or None)."""
        nonce: str | None = response.headers.get("DPoP-Nonce")
        if nonce is None or not _NONCE.fullmatch(nonce):
            return None
        with self._lock:
            self._nonces[self._slot(role, url)] = nonce
        return nonce


def nonce_demanded(response: httpx.Response) -> bool:
    """Whether a resource server asks for a (new) nonce: 401 + ``use_dpop_nonce`` (§9)."""
    if response.status_code != 401:
        return False
    challenge = response.headers.get("WWW-Authenticate", "")
    return challenge.lstrip().lower().startswith("dpop") and bool(
        re.search(r'error\s*=\s*"?use_dpop_nonce"?', challenge)
    )


class DPoPAuth(httpx.Auth):
    """``httpx.Auth`` for a DPoP-bound access token at a resource server (§7.1, §9).

    Sends ``Authorization: DPoP <token>`` and a proof with ``ath``; learns every
    ``DPoP-Nonce`` the server sends; retries once, and only when the server demands a
    nonce and hands out one it did not see from us. ``sent`` counts requests (a test
    proves there is no loop). Example::

        auth = DPoPAuth(key, access_token, nonces)
        response = await http.get(url, auth=auth)
    """

    def __init__(
        self,
        key: DPoPKey,
        access_token: str,
        nonces: DPoPNonces,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not _TOKEN68.fullmatch(access_token):
            # Checked here: an HTTP library refusing a header quotes the value (the token).
            raise ValueError("access_token is not a token68 value (RFC 9449 §7.1)")
        self._key = key
        self._token = access_token
        self._nonces = nonces
        self._clock = clock
        self.sent = 0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        used = self._nonces.get("resource", request.url)
        response = yield self._signed(request, used)
        fresh = self._nonces.learn("resource", request.url, response)
        if nonce_demanded(response) and fresh is not None and fresh != used:
            yield self._signed(request, fresh)  # §9: one retry with the server's nonce

    def _signed(self, request: httpx.Request, nonce: str | None) -> httpx.Request:
        request.headers["Authorization"] = f"{TOKEN_TYPE} {self._token}"
        request.headers["DPoP"] = self._key.proof(
            request.method, request.url, access_token=self._token, nonce=nonce, now=self._clock()
        )
        self.sent += 1
        return request

    def __repr__(self) -> str:  # the token stays out of reprs and tracebacks
        return f"DPoPAuth(jkt={self._key.thumbprint!r})"


def _public_jwk(key: DPoPPrivateKey) -> dict[str, str]:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        point = key.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": _b64(point.x.to_bytes(32, "big")),
                "y": _b64(point.y.to_bytes(32, "big"))}
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": _b64(raw)}
    numbers = key.public_key().public_numbers()
    return {"kty": "RSA", "n": _b64_int(numbers.n), "e": _b64_int(numbers.e)}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_int(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _b64_json(value: object) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))
