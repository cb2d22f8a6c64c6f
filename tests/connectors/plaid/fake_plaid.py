"""A loopback Plaid API for tests: the endpoints we use, in Plaid's documented shapes.

The real plaid-python client talks to it over a socket (``PlaidConfig(host=…)``). It also
signs webhooks the way Plaid does: an ES256 compact JWS over
``{"iat": …, "request_body_sha256": …}`` with a ``kid`` that
``/webhook_verification_key/get`` resolves to the public JWK.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

CLIENT_ID = "test-client-id"
SECRET = "test-plaid-secret-value"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class SigningKey:
    kid: str
    private: ec.EllipticCurvePrivateKey
    created_at: int
    expired_at: int | None = None

    def jwk(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        return {
            "alg": "ES256", "crv": "P-256", "kid": self.kid, "kty": "EC", "use": "sig",
            "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big")),
            "created_at": self.created_at, "expired_at": self.expired_at,
        }


def new_key(kid: str | None = None) -> SigningKey:
    return SigningKey(kid or secrets.token_hex(8), ec.generate_private_key(ec.SECP256R1()),
                      int(time.time()) - 86400)


def jws(header: dict[str, Any], claims: dict[str, Any], sign: Any) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def es256(private: ec.EllipticCurvePrivateKey) -> Any:
    def sign(data: bytes) -> bytes:
        r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return sign


def plaid_transaction(txn_id: str, amount: float, *, account_id: str = "acc-1",
                      pending: bool = False, pending_id: str | None = None,
                      day: str = "2026-11-20", name: str = "Coffee Shop") -> dict[str, Any]:
    """A transaction object with every field Plaid documents for /transactions/sync."""
    return {
        "account_id": account_id, "account_owner": None, "amount": amount,
        "iso_currency_code": "USD", "unofficial_currency_code": None,
        "authorized_date": day, "authorized_datetime": None, "category": None,
        "category_id": None, "check_number": None, "counterparties": [],
        "date": day, "datetime": None,
        "location": {"address": None, "city": None, "region": None, "postal_code": None,
                     "country": None, "lat": None, "lon": None, "store_number": None},
        "logo_url": None, "merchant_entity_id": None, "merchant_name": "Blue Bottle",
        "name": name, "original_description": None,
        "payment_channel": "in store",
        "payment_meta": {"by_order_of": None, "payee": None, "payer": None,
                         "payment_method": None, "payment_processor": None, "ppd_id": None,
                         "reason": None, "reference_number": None},
        "pending": pending, "pending_transaction_id": pending_id,
        "personal_finance_category": {"primary": "FOOD_AND_DRINK",
                                      "detailed": "FOOD_AND_DRINK_COFFEE",
                                      "confidence_level": "VERY_HIGH"},
        "personal_finance_category_icon_url": "https://plaid-category-icons.plaid.com/PFC_FOOD_AND_DRINK.png",
        "transaction_code": None, "transaction_id": txn_id, "transaction_type": "place",
        "website": None,
    }


ACCOUNTS = [
    {"account_id": "acc-1", "balances": {"available": 100.0, "current": 110.0, "limit": None,
     "iso_currency_code": "USD", "unofficial_currency_code": None},
     "mask": "0000", "name": "Plaid Checking", "official_name": "Plaid Gold Checking",
     "type": "depository", "subtype": "checking"},
    {"account_id": "acc-2", "balances": {"available": 3770.0, "current": 1230.0, "limit": 5000.0,
     "iso_currency_code": "USD", "unofficial_currency_code": None},
     "mask": "3333", "name": "Plaid Credit Card", "official_name": None,
     "type": "credit", "subtype": "credit card"},
]


@dataclass
class FakePlaid:
    """The server's state; tests script it and read what it saw."""

    keys: dict[str, SigningKey] = field(default_factory=dict)
    access_tokens: dict[str, str] = field(default_factory=dict)  # access token -> item id
    pages: list[dict[str, list[Any]]] = field(default_factory=list)
    mutate_on: set[int] = field(default_factory=set)  # page indexes that fail once
    fail_next: tuple[int, str, str] | None = None  # (status, error_type, error_code)
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    key_requests: int = 0
    removed_items: list[str] = field(default_factory=list)
    #: Every /link/token/create body, and the public tokens Link handed out (-> link token).
    link_tokens: list[dict[str, Any]] = field(default_factory=list)
    public_tokens: dict[str, str] = field(default_factory=dict)
    #: Refuse public tokens this server did not hand out through complete_link().
    strict_public_tokens: bool = False
    #: Items whose login broke (ITEM_LOGIN_REQUIRED until update-mode Link completes).
    login_required: set[str] = field(default_factory=set)

    def item_of(self, access_token: str) -> str:
        return self.access_tokens[access_token]

    def complete_link(self, link_token: str) -> str:
        """What the user finishing Plaid Link does: a public token for the frontend.

        An update-mode token (made with an access token) also repairs that Item's login.
        """
        made = next(b for b in self.link_tokens if b["_issued"] == link_token)
        if "access_token" in made:
            self.login_required.discard(self.access_tokens[made["access_token"]])
        public = f"public-sandbox-{secrets.token_hex(8)}"
        self.public_tokens[public] = link_token
        return public

    def add_key(self, key: SigningKey | None = None) -> SigningKey:
        key = key or new_key()
        self.keys[key.kid] = key
        return key

    def sign(self, body: bytes, key: SigningKey, *, iat: int | None = None) -> str:
        claims = {"iat": int(time.time()) if iat is None else iat,
                  "request_body_sha256": hashlib.sha256(body).hexdigest()}
        return jws({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, es256(key.private))

    def app(self) -> Starlette:
        routes = [
            Route(path, self._endpoint(handler), methods=["POST"])
            for path, handler in {
                "/link/token/create": self._link_token,
                "/item/public_token/exchange": self._exchange,
                "/accounts/get": self._accounts,
                "/transactions/sync": self._sync,
                "/item/remove": self._remove,
                "/webhook_verification_key/get": self._key,
            }.items()
        ]
        return Starlette(routes=routes)

    def _endpoint(self, handler: Any) -> Any:
        async def endpoint(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append((request.url.path, body))
            if (request.headers.get("plaid-client-id") != CLIENT_ID
                    or request.headers.get("plaid-secret") != SECRET):
                return _error(400, "INVALID_INPUT", "INVALID_API_KEYS")
            if self.fail_next is not None:
                status, kind, code = self.fail_next
                self.fail_next = None
                return _error(status, kind, code)
            response: JSONResponse = handler(body)
            return response
        return endpoint

    def _item(self, body: dict[str, Any]) -> str | JSONResponse:
        item = self.access_tokens.get(body.get("access_token", ""))
        if item is None:
            return _error(400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN")
        return _error(400, "ITEM_ERROR", "ITEM_LOGIN_REQUIRED") if (
            item in self.login_required) else item

    def _link_token(self, body: dict[str, Any]) -> JSONResponse:
        if "access_token" in body and body["access_token"] not in self.access_tokens:
            return _error(400, "INVALID_INPUT", "INVALID_ACCESS_TOKEN")
        token = f"link-sandbox-{secrets.token_hex(8)}"
        self.link_tokens.append({**body, "_issued": token})
        return JSONResponse({"link_token": token,
                             "expiration": "2026-11-24T17:00:00Z", "request_id": _rid()})

    def _exchange(self, body: dict[str, Any]) -> JSONResponse:
        if self.strict_public_tokens and self.public_tokens.pop(
                body.get("public_token", ""), None) is None:
            return _error(400, "INVALID_INPUT", "INVALID_PUBLIC_TOKEN")
        token = f"access-sandbox-{secrets.token_hex(8)}"
        item = f"item-{secrets.token_hex(6)}"
        self.access_tokens[token] = item
        return JSONResponse({"access_token": token, "item_id": item, "request_id": _rid()})

    def _item_object(self, item: str) -> dict[str, Any]:
        return {"item_id": item, "webhook": "", "error": None, "available_products": [],
                "billed_products": ["transactions"], "consent_expiration_time": None,
                "update_type": "background", "institution_id": "ins_109508", "products": []}

    def _accounts(self, body: dict[str, Any]) -> JSONResponse:
        item = self._item(body)
        if isinstance(item, JSONResponse):
            return item
        return JSONResponse({"accounts": ACCOUNTS, "item": self._item_object(item),
                             "request_id": _rid()})

    def _sync(self, body: dict[str, Any]) -> JSONResponse:
        item = self._item(body)
        if isinstance(item, JSONResponse):
            return item
        cursor = body.get("cursor") or "cur-0"
        index = int(cursor.removeprefix("cur-"))
        if index in self.mutate_on:
            self.mutate_on.discard(index)
            return _error(400, "TRANSACTIONS_ERROR",
                          "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION")
        page = self.pages[index] if index < len(self.pages) else {}
        return JSONResponse({
            "accounts": [], "added": page.get("added", []), "modified": page.get("modified", []),
            "removed": page.get("removed", []),
            "next_cursor": f"cur-{min(index + 1, len(self.pages))}",
            "has_more": index + 1 < len(self.pages), "request_id": _rid(),
            "transactions_update_status": "HISTORICAL_UPDATE_COMPLETE",
        })

    def _remove(self, body: dict[str, Any]) -> JSONResponse:
        item = self._item(body)
        if isinstance(item, JSONResponse):
            return item
        del self.access_tokens[body["access_token"]]
        self.removed_items.append(item)
        return JSONResponse({"request_id": _rid()})

    def _key(self, body: dict[str, Any]) -> JSONResponse:
        self.key_requests += 1
        key = self.keys.get(body.get("key_id", ""))
        if key is None:
            return _error(400, "INVALID_INPUT", "INVALID_WEBHOOK_VERIFICATION_KEY_ID")
        return JSONResponse({"key": key.jwk(), "request_id": _rid()})


def _rid() -> str:
    return secrets.token_hex(6)


def _error(status: int, kind: str, code: str) -> JSONResponse:
    return JSONResponse({"error_type": kind, "error_code": code, "error_message": "fake",
                         "display_message": None, "request_id": _rid()}, status_code=status)
