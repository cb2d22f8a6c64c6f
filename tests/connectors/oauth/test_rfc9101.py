"""Request objects (RFC 9101) as the client builds them, checked by an independent verifier."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import KeySet

from connectors import PemSigner
from connectors.oauth.rfc9101 import build_request_object


@pytest.mark.parametrize("key", [
    ec.generate_private_key(ec.SECP256R1()),
    rsa.generate_private_key(public_exponent=65537, key_size=2048),
], ids=["ES256", "PS256"])
async def test_the_request_object_verifies_and_carries_every_parameter(
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
) -> None:
    signer = PemSigner(key, key_id="k1")
    now = datetime.now(UTC)
    params = {"response_type": "code", "state": "s", "claims": {"id_token": {
        "openbanking_intent_id": {"value": "aac-1", "essential": True}}}}

    jws = await build_request_object(signer, params, client_id="tpp", audience="https://as",
                                     now=now)

    keys = KeySet.import_key_set({"keys": [signer.public_jwk()]})
    token = jwt.decode(jws, keys, algorithms=[signer.algorithm])
    assert token.header["typ"] == "oauth-authz-req+jwt"
    assert token.header["kid"] == "k1"
    claims = token.claims
    assert claims["iss"] == "tpp"
    assert claims["aud"] == "https://as"
    assert claims["claims"]["id_token"]["openbanking_intent_id"]["value"] == "aac-1"
    assert claims["exp"] - claims["nbf"] == 300
    assert claims["nbf"] == int(now.timestamp())
    assert len(claims["jti"]) >= 32


async def test_lifetimes_over_an_hour_are_refused() -> None:
    signer = PemSigner(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ValueError, match="60 minutes"):
        await build_request_object(signer, {}, client_id="c", audience="a",
                                   now=datetime.now(UTC), lifetime=timedelta(hours=2))
