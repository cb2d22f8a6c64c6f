"""``sandbox-fapi2``: the sandbox bank as a FAPI 2.0 Security Profile bank with DPoP.

What it adds to the plain sandbox (FAPI 2.0 Security Profile, final, §5.3; RFC 9449):

- PAR is required (§5.3.2.2 item 2) and every pushed request must carry ``dpop_jkt``
  (RFC 9449 §10): the code is bound to the client's DPoP key, and a proof sent with the
  push must be signed by that key (§10.1);
- clients authenticate with ``private_key_jwt`` only (§5.3.2.1 allows mTLS too; this
  sandbox has no TLS) — every registered client is checked at construction;
- the token endpoint demands a DPoP proof on every request (code exchange and refresh),
  its current nonce (§8: ``400 use_dpop_nonce`` with a ``DPoP-Nonce`` header), a key
  equal to the code's ``dpop_jkt`` or to the refresh token's binding, and answers
  ``token_type`` ``DPoP`` with every token bound to the proof's key (``cnf.jkt``);
- the account API accepts only ``Authorization: DPoP`` with a proof carrying ``ath``,
  the resource server's own nonce (§9: ``401`` with ``WWW-Authenticate: DPoP
  error="use_dpop_nonce"``) and the key the token is bound to; a bearer presentation of
  a bound token is refused (§7.2). Replayed proofs (``jti``), a wrong ``htm``/``htu``,
  an ``iat`` outside the window and a wrong ``ath`` are refused (§4.3).

It wraps the plain sandbox's ASGI app in :class:`Fapi2Gate` rather than changing it;
:attr:`Fapi2SandboxBank.refused` counts refusals by error code, so tests can prove a
client does not loop on a refused proof.

The development client (``sandbox-fapi2-client``) signs its assertions with a key
generated on first use in the gateway's data directory (:mod:`aggregator.sandbox_keys`),
which the shipped ``sandbox-fapi2`` profile names with ``dev_private_key``;
:func:`dev_fapi2_client` registers its public half.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aggregator.errors import ConfigError
from aggregator.sandbox.aisp import AISP_PREFIX
from aggregator.sandbox.bank import SandboxBank
from aggregator.sandbox.config import DEV_REDIRECT_URIS, SandboxClient, SandboxConfig
from aggregator.sandbox.discovery import PAR_PATH, TOKEN_PATH
from aggregator.sandbox.models import digest
from aggregator.sandbox.rfc9449 import (
    PROOF_ALGORITHMS,
    NonceSource,
    ProofRefused,
    ProofVerifier,
    VerifiedProof,
)
from aggregator.sandbox_keys import sandbox_signer

__all__ = ["FAPI2_CLIENT_ID", "FAPI2_CLIENT_KEY", "FAPI2_SIGNING_ALG", "Fapi2Gate",
           "Fapi2SandboxBank", "dev_fapi2_client", "fapi2_client"]

FAPI2_CLIENT_ID = "sandbox-fapi2-client"
#: The development client's generated key, as the profile's ``dev_private_key`` names it.
FAPI2_CLIENT_KEY, FAPI2_SIGNING_ALG = "sandbox-fapi2-client", "ES256"
_METADATA_PATHS = frozenset({
    "/.well-known/oauth-authorization-server", "/.well-known/openid-configuration",
})


def dev_fapi2_client(
    data_dir: Path, redirect_uris: tuple[str, ...] = DEV_REDIRECT_URIS
) -> SandboxClient:
    """The ``sandbox-fapi2`` profile's client, with the public half of the key generated
    (if need be) in the gateway's data directory ``data_dir``."""
    signer = sandbox_signer(data_dir, FAPI2_CLIENT_KEY, FAPI2_SIGNING_ALG)
    return fapi2_client(dict(signer.public_jwk()), redirect_uris)


def fapi2_client(
    public_jwk: dict[str, Any], redirect_uris: tuple[str, ...] = DEV_REDIRECT_URIS, *,
    client_id: str = FAPI2_CLIENT_ID,
) -> SandboxClient:
    """A ``private_key_jwt`` client that signs with the key of ``public_jwk``."""
    return SandboxClient(client_id=client_id, redirect_uris=redirect_uris,
                         auth_methods=("private_key_jwt",), jwks={"keys": [public_jwk]})


class Fapi2SandboxBank(SandboxBank):
    """The sandbox bank in FAPI 2.0 + DPoP mode. Example::

        bank = Fapi2SandboxBank(SandboxConfig(clients=[dev_fapi2_client(data_dir)],
                                              require_par=True))   # nonces on
        async with bank.serve() as issuer:
            ...
        bank.refused["invalid_dpop_proof"]         # proofs refused so far

    ``require_nonce`` (default on) makes both the token endpoint and the account API
    demand their nonce; ``nonce_ttl`` is how long one lives (sandbox-clock seconds).
    """

    def __init__(
        self, config: SandboxConfig, *, require_nonce: bool = True, nonce_ttl: float = 300.0,
    ) -> None:
        if not config.require_par:
            raise ConfigError("sandbox-fapi2: FAPI 2.0 requires PAR (set require_par=True)")
        for client in config.clients:
            if list(client.auth_methods) != ["private_key_jwt"]:
                raise ConfigError(f"sandbox-fapi2: client {client.client_id} must use "
                                  "private_key_jwt only")
        self.require_nonce = require_nonce
        self.nonce_ttl = nonce_ttl
        self.refused: Counter[str] = Counter()
        super().__init__(config)

    def _create_app(self, signing_key: Any) -> Any:
        inner = super()._create_app(signing_key)
        self.token_nonces = NonceSource(self.clock, self.nonce_ttl)
        self.resource_nonces = NonceSource(self.clock, self.nonce_ttl)
        self.gate = Fapi2Gate(inner, self)
        return self.gate


class Fapi2Gate:
    """Pure-ASGI middleware adding FAPI 2.0 + DPoP to the plain sandbox (module doc)."""

    def __init__(self, app: ASGIApp, bank: Fapi2SandboxBank) -> None:
        self.app = app
        self.bank = bank
        nonce = bank.require_nonce
        self.token_proofs = ProofVerifier(bank.token_nonces if nonce else None)
        self.resource_proofs = ProofVerifier(bank.resource_nonces if nonce else None)
        self._lock = threading.Lock()
        #: digest of an access or refresh token -> the jkt it is bound to (``cnf.jkt``).
        self._bound: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path in _METADATA_PATHS and method == "GET":
            await self._metadata(scope, receive, send)
        elif path == TOKEN_PATH and method == "POST":
            await self._token(scope, receive, send)
        elif path == PAR_PATH and method == "POST":
            await self._par(scope, receive, send)
        elif path.startswith(AISP_PREFIX):
            await self._resource(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def bound_key(self, token: str) -> str | None:
        with self._lock:
            return self._bound.get(digest(token))

    # -- discovery ---------------------------------------------------------------

    async def _metadata(self, scope: Scope, receive: Receive, send: Send) -> None:
        status, _, body = await _inner(self.app, scope, await _body(receive))
        document = json.loads(body)
        document.update({
            "dpop_signing_alg_values_supported": list(PROOF_ALGORITHMS),
            "require_pushed_authorization_requests": True,
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "revocation_endpoint_auth_methods_supported": ["private_key_jwt"],
        })
        await JSONResponse(document, status)(scope, receive, send)

    # -- PAR (RFC 9126 + RFC 9449 §10) ---------------------------------------------

    async def _par(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        form = dict(parse_qsl(body.decode("latin-1")))
        jkt = form.get("dpop_jkt")
        if not jkt:
            await self._oauth_error(scope, send, "invalid_request",
                                    "dpop_jkt is required: this bank binds codes to a DPoP key")
            return
        proofs = Headers(scope=scope).getlist("dpop")
        if proofs:
            try:
                proof = self._proof(self.token_proofs, proofs, scope, "POST")
            except ProofRefused as refused:
                await self._refuse_token(scope, send, refused)
                return
            if proof.jkt != jkt:  # §10.1: both given, they must name one key
                await self._refuse_token(scope, send, ProofRefused(
                    "invalid_dpop_proof", "the proof's key is not dpop_jkt"))
                return
        status, headers, answer = await _inner(self.app, scope, body)
        await Response(answer, status, _kept(headers))(scope, receive, send)

    # -- the token endpoint (RFC 9449 §5, §8) ---------------------------------------

    async def _token(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _body(receive)
        form = dict(parse_qsl(body.decode("latin-1")))
        try:
            proof = self._proof(self.token_proofs, Headers(scope=scope).getlist("dpop"),
                                scope, "POST")
            expected = self._binding_of(form)
            if expected is not None and expected != proof.jkt:
                raise ProofRefused("invalid_dpop_proof",
                                   "the proof's key is not the one the grant is bound to")
        except ProofRefused as refused:
            await self._refuse_token(scope, send, refused)
            return
        status, headers, answer = await _inner(self.app, scope, body)
        if status != 200:
            await Response(answer, status, _kept(headers))(scope, receive, send)
            return
        tokens = json.loads(answer)
        with self._lock:
            for name in ("access_token", "refresh_token"):
                if isinstance(tokens.get(name), str):
                    self._bound[digest(tokens[name])] = proof.jkt
        tokens["token_type"] = "DPoP"  # noqa: S105 - RFC 9449 §5, a token type name
        response = JSONResponse(tokens, 200, _kept(headers))
        response.headers["DPoP-Nonce"] = self.bank.token_nonces.current()
        await response(scope, receive, send)

    def _binding_of(self, form: dict[str, str]) -> str | None:
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self.bank.store.code_dpop_jkt(form.get("code", ""))
        if grant_type == "refresh_token":
            return self.bound_key(form.get("refresh_token", ""))
        return None

    async def _refuse_token(self, scope: Scope, send: Send, refused: ProofRefused) -> None:
        await self._oauth_error(scope, send, refused.error, refused.description,
                                {"DPoP-Nonce": self.bank.token_nonces.current()})

    async def _oauth_error(self, scope: Scope, send: Send, error: str, description: str,
                           headers: dict[str, str] | None = None) -> None:
        self.bank.refused[error] += 1
        body = {"error": error, "error_description": description}
        response = JSONResponse(body, 400, {"Cache-Control": "no-store", **(headers or {})})
        await response(scope, _no_body, send)

    # -- the account API (RFC 9449 §7, §9) ---------------------------------------------

    async def _resource(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        try:
            if scheme.lower() != "dpop" or not token:
                # §7.2: a DPoP-bound token presented as a bearer token is refused.
                raise ProofRefused("invalid_token", "a DPoP-bound access token is required")
            proof = self._proof(self.resource_proofs, headers.getlist("dpop"), scope,
                                scope["method"], access_token=token)
            if self.bound_key(token) != proof.jkt:
                raise ProofRefused("invalid_token", "the token is not bound to the proof's key")
        except ProofRefused as refused:
            await self._refuse_resource(scope, send, refused)
            return
        scope = dict(scope)
        scope["headers"] = [
            (k, v) for k, v in scope["headers"] if k not in (b"authorization", b"dpop")
        ] + [(b"authorization", f"Bearer {token}".encode("latin-1"))]
        nonce = self.bank.resource_nonces.current()

        async def send_with_nonce(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["DPoP-Nonce"] = nonce
            await send(message)

        await self.app(scope, receive, send_with_nonce)

    async def _refuse_resource(self, scope: Scope, send: Send, refused: ProofRefused) -> None:
        self.bank.refused[refused.error] += 1
        algs = " ".join(PROOF_ALGORITHMS)
        challenge = (f'DPoP error="{refused.error}", '
                     f'error_description="{refused.description}", algs="{algs}"')
        headers = {"WWW-Authenticate": challenge}
        if refused.error == "use_dpop_nonce":
            headers["DPoP-Nonce"] = self.bank.resource_nonces.current()
        await Response(None, 401, headers)(scope, _no_body, send)

    # -- shared ----------------------------------------------------------------------

    def _proof(
        self, verifier: ProofVerifier, proofs: list[str], scope: Scope, method: str,
        *, access_token: str | None = None,
    ) -> VerifiedProof:
        if len(proofs) != 1:  # §4.3 check 1: exactly one DPoP header
            raise ProofRefused("invalid_dpop_proof", "exactly one DPoP header is required")
        return verifier.verify(proofs[0], method=method, uri=self._uri(scope),
                               access_token=access_token)

    def _uri(self, scope: Scope) -> str:
        base = self.bank.issuer or str(Request(scope).base_url).rstrip("/")
        return f"{base}{scope['path']}"


async def _body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _inner(app: ASGIApp, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]],
                                                                   bytes]:
    """Call the wrapped app with ``body`` and collect its whole answer."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status, headers, chunks = 500, [], []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, headers, b"".join(chunks)


def _kept(headers: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The inner answer's headers, minus the length the new body recomputes."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
            if k != b"content-length"}
