"""Write the hand-made seeds of each harness's corpus (``corpus/<name>/seed-*``).

Seeds are valid inputs, so the fuzzer starts deep (past the signature, the key
commitment, the ``state`` match) rather than rediscovering the formats. Inputs the
fuzzer found and kept are committed beside them. Run from the repository root::

    PYTHONPATH=. python tests/fuzz/make_seeds.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from urllib.parse import urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

CORPUS = Path(__file__).parent / "corpus"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _signed(body: bytes, *, iat: int) -> bytes:
    from tests.fuzz.harness_plaid_webhook import KID, PRIVATE_KEY

    head = _b64(json.dumps({"alg": "ES256", "kid": KID, "typ": "JWT"}).encode())
    claims = {"iat": iat, "request_body_sha256": hashlib.sha256(body).hexdigest()}
    payload = _b64(json.dumps(claims).encode())
    der = PRIVATE_KEY.sign(f"{head}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    signature = _b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return f"{head}.{payload}.{signature}".encode() + b"\n" + body


def plaid_webhook() -> dict[str, bytes]:
    from tests.fuzz.harness_plaid_webhook import NOW

    sync = json.dumps({"webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE",
                       "item_id": "item-1", "initial_update_complete": True}).encode()
    error = json.dumps({"webhook_type": "ITEM", "webhook_code": "ERROR", "item_id": "item-2",
                        "error": {"error_code": "ITEM_LOGIN_REQUIRED"}}).encode()
    return {"sync": _signed(sync, iat=NOW - 10), "item-error": _signed(error, iat=NOW - 10),
            "stale": _signed(sync, iat=NOW - 3600), "not-json": _signed(b"{", iat=NOW - 10),
            **plaid_webhook_hostile()}


def plaid_webhook_hostile() -> dict[str, bytes]:
    """Issue 15's hostile inputs: each once a 500 or an acceptance, now a refusal."""
    from tests.fuzz.harness_plaid_webhook import KID, NOW

    def body(extra: bytes) -> bytes:
        return b'{"webhook_type":"ITEM","webhook_code":"ERROR",' + extra + b"}"

    deep_header = (b'{"alg":"ES256","kid":"' + KID.encode() + b'","x":'
                   + b"[" * 1000 + b"]" * 1000 + b"}")
    claims = b'{"iat":%d,"request_body_sha256":"%s"}' % (
        NOW - 10, hashlib.sha256(b"{}").hexdigest().encode())
    return {
        "regression-header-nested-1000":
            f"{_b64(deep_header)}.{_b64(claims)}.{'A' * 86}".encode() + b"\n{}",
        "regression-body-nested-1500": _signed(
            body(b'"x":' + b"[" * 1500 + b"]" * 1500), iat=NOW - 10),
        "regression-lone-surrogate-item": _signed(body(b'"item_id":"\\ud800"'), iat=NOW - 10),
        "regression-nan": _signed(body(b'"item_id":"i","n":NaN'), iat=NOW - 10),
        "regression-infinity": _signed(body(b'"item_id":"i","n":-Infinity'), iat=NOW - 10),
        "regression-duplicate-keys": _signed(body(b'"webhook_code":"LOGIN_REPAIRED"'),
                                             iat=NOW - 10),
        "regression-nul-item": _signed(body(b'"item_id":"a\\u0000b"'), iat=NOW - 10),
    }


def callback() -> dict[str, bytes]:
    from tests.fuzz.harness_callback import ISSUER, STATE

    def query(**params: str) -> bytes:
        return urlencode(params).encode()

    return {
        "code": query(code="SplxlOBeZQQYbYS6WxSbIA", state=STATE),
        "code-iss": query(code="SplxlOBeZQQYbYS6WxSbIA", state=STATE, iss=ISSUER),
        "denied": query(error="access_denied", state=STATE, iss=ISSUER),
        "error": query(error="server_error", error_description="x y", state=STATE),
        "other-region": query(code="c0de", state=STATE.replace("_eu_", "_us_")),
    }


def envelope() -> dict[str, bytes]:
    from tests.fuzz.harness_envelope import AAD, ENVELOPE, KEY, PLAINTEXT

    sealed = ENVELOPE.seal(KEY, PLAINTEXT, AAD)
    return {"sealed": sealed, "other-aad": ENVELOPE.seal(KEY, PLAINTEXT, AAD + b"x"),
            "truncated": sealed[:-1], "version-2": b"\x02" + sealed[1:]}


def main() -> None:
    for name, make in (("plaid_webhook", plaid_webhook), ("callback", callback),
                       ("envelope", envelope)):
        directory = CORPUS / name
        directory.mkdir(parents=True, exist_ok=True)
        for label, data in make().items():
            (directory / f"seed-{label}").write_bytes(data)
        print(f"{directory}: {len(list(directory.iterdir()))} files", file=sys.stderr)


if __name__ == "__main__":
    main()
