"""The sandbox OBIE mode's hybrid flow: ``code id_token`` answered by form post.

FAPI 1 Advanced §5.2.2: an ID token beside the code, carrying ``c_hash`` (OIDC Core
§3.3.2.11), ``s_hash`` (FAPI 1 Advanced §5.2.2.1-5), ``nonce`` and the consent's
``openbanking_intent_id``, signed ES256 with the bank's key. The answer is a form the
browser posts to the client's redirect URI (OIDC Form Post Response Mode §2), with
``iss`` (RFC 9207 §2) and a button for browsers without script.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Sequence
from html import escape
from typing import Any

from authlib.oauth2.rfc6749 import AccessDeniedError
from authlib.oidc.core import OpenIDHybridGrant, UserInfo
from joserfc.jwk import ECKey

from aggregator.sandbox.authorization_server import AuthorizationCodeGrant
from aggregator.sandbox.discovery import ID_TOKEN_ALGORITHM
from aggregator.sandbox.middleware import current_issuer
from aggregator.sandbox.models import ClientModel
from aggregator.sandbox.obie_consents import ACR_VALUES, intent_of
from aggregator.sandbox.requests import SandboxOAuth2Request

__all__ = ["ObieHybridGrant", "form_post_page"]


class ObieHybridGrant(OpenIDHybridGrant):  # type: ignore[misc]
    """``code id_token`` (FAPI 1 Advanced §5.2.2): an ID token beside the code, with
    ``c_hash``, ``s_hash`` and ``openbanking_intent_id``, answered by form post."""

    def save_authorization_code(self, code: str, request: SandboxOAuth2Request) -> None:
        AuthorizationCodeGrant.save_authorization_code(self, code, request)
        intent = intent_of(request.payload.data)
        if intent is not None:
            self.server.consents.bind_code(code, intent)

    def exists_nonce(self, nonce: str, request: SandboxOAuth2Request) -> bool:
        return bool(self.server.store.nonce_seen(request.payload.client_id, nonce))

    def resolve_client_private_key(self, client: ClientModel) -> ECKey:
        key: ECKey = self.server.signing_key
        return key

    def get_client_algorithm(self, client: ClientModel) -> str:
        return ID_TOKEN_ALGORITHM

    def get_encode_header(self, client: ClientModel) -> dict[str, str]:
        return {"alg": ID_TOKEN_ALGORITHM, "kid": self.server.signing_key.kid or ""}

    def get_client_claims(self, client: ClientModel) -> dict[str, Any]:
        now = int(time.time())
        return {"iss": current_issuer(), "aud": [client.get_client_id()], "iat": now,
                "exp": now + 300}

    def generate_user_info(self, user: str, scope: str) -> UserInfo:
        data = self.request.payload.data
        info = UserInfo(sub=user, acr=ACR_VALUES[0])
        if data.get("state"):
            info["s_hash"] = _half_hash(data["state"])
        intent = intent_of(data)
        if intent is not None:
            info["openbanking_intent_id"] = intent
        return info

    def create_authorization_response(self, redirect_uri: str, grant_user: str | None
                                      ) -> tuple[int, str, list[tuple[str, str]]]:
        if self.request.payload.data.get("response_mode") != "form_post":
            result: tuple[int, str, list[tuple[str, str]]] = super(
                ).create_authorization_response(redirect_uri, grant_user)
            return result
        if grant_user:
            params = self.create_granted_params(grant_user)
        else:
            params = list(AccessDeniedError().get_body())
        if self.request.payload.state:
            params.append(("state", self.request.payload.state))
        params.append(("iss", current_issuer()))  # RFC 9207 §2, in every response mode
        return 200, form_post_page(redirect_uri, params), [
            ("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")]


def form_post_page(action: str, params: Sequence[tuple[str, str]]) -> str:
    """OIDC Form Post Response Mode §2: hidden fields, sent at once; a button without JS."""
    fields = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(str(v))}">'
                     for k, v in params)
    return ("<!doctype html><html><head><title>Returning to the app</title></head><body>"
            f'<form method="post" action="{escape(action)}">{fields}'
            '<noscript><button type="submit">Continue</button></noscript></form>'
            "<script>document.forms[0].submit()</script></body></html>")


def _half_hash(value: str) -> str:
    digest = hashlib.sha256(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
