"""private_key_jwt assertions: claims, lifetime, algorithms, keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from joserfc import jwt
from joserfc.jwk import import_key

from connectors import PemSigner, build_client_assertion

NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


async def test_assertion_claims_and_signature(signer: PemSigner) -> None:
    token = await build_client_assertion(
        signer, client_id="gw", audience="https://bank.test", now=NOW
    )

    decoded = jwt.decode(token, import_key(signer.public_jwk()), algorithms=[signer.algorithm])
    assert decoded.header == {"alg": signer.algorithm, "typ": "JWT", "kid": "test-key"}
    claims = decoded.claims
    assert claims["iss"] == claims["sub"] == "gw"
    assert claims["aud"] == "https://bank.test"  # a string, not a list
    assert claims["iat"] == int(NOW.timestamp())
    assert claims["exp"] - claims["iat"] == 60
    assert len(claims["jti"]) >= 32


async def test_jti_is_unique(signer: PemSigner) -> None:
    tokens = [
        await build_client_assertion(signer, client_id="gw", audience="a", now=NOW)
        for _ in range(5)
    ]

    key = import_key(signer.public_jwk())
    jtis = {jwt.decode(t, key, algorithms=[signer.algorithm]).claims["jti"] for t in tokens}
    assert len(jtis) == 5


@pytest.mark.parametrize("seconds", [0, 61, 3600])
async def test_lifetime_is_at_most_sixty_seconds(signer: PemSigner, seconds: int) -> None:
    with pytest.raises(ValueError, match="60 seconds"):
        await build_client_assertion(
            signer, client_id="gw", audience="a", now=NOW, lifetime=timedelta(seconds=seconds)
        )


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_algorithm_follows_the_key(rsa_pem: bytes, ec_pem: bytes) -> None:
    assert PemSigner.from_pem(rsa_pem).algorithm == "PS256"
    assert PemSigner.from_pem(ec_pem).algorithm == "ES256"


@pytest.mark.parametrize(
    ("make_key", "algorithm", "problem"),
    [
        (lambda: ec.generate_private_key(ec.SECP384R1()), None, "P-256"),
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), None, "2048"),  # noqa: S505
        (lambda: ec.generate_private_key(ec.SECP256R1()), "PS256", "needs an RSA key"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "RS256", "PS256 or ES256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "HS256", "PS256 or ES256"),
    ],
)
def test_weak_or_mismatched_keys_are_refused(
    make_key: object, algorithm: str | None, problem: str
) -> None:
    key = make_key()  # type: ignore[operator]
    with pytest.raises(ValueError, match=problem):
        PemSigner.from_pem(_pem(key), algorithm=algorithm)


def test_unreadable_pem_does_not_echo_the_input() -> None:
    with pytest.raises(ValueError, match="PEM") as caught:
        PemSigner.from_pem("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----")

    assert "c2VjcmV0" not in str(caught.value)


def test_signer_repr_shows_no_key(ec_pem: bytes) -> None:
    assert (
        repr(PemSigner.from_pem(ec_pem, key_id="k")) == "PemSigner(algorithm='ES256', key_id='k')"
    )
