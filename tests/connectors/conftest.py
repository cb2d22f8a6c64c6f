"""Fixtures for the connectors tests; reusable helpers live in ``sandbox_driver``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors import PemSigner

ProfileWriter = Callable[..., Path]

VALID_PROFILE = """\
id = "{id}"
display_name = "Example Bank"
country = "DE"
region = "eu"
issuer = "https://auth.example.test"
scopes = "openid offline_access accounts"
client_id = "our-client"
client_auth_method = "client_secret_basic"
client_secret_env = "EXAMPLE_SECRET"
hooks = ["prompt_consent_for_offline_access"]

[api]
dialect = "obie"
base_url = "https://api.example.test/open-banking/v3.1/aisp"
"""


@pytest.fixture
def profile_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "banks"
    directory.mkdir()
    return directory


@pytest.fixture
def write_profile(profile_dir: Path) -> ProfileWriter:
    """``write_profile(text=None, name="example", **replace)`` writes one profile file.

    Without `text` it writes :data:`VALID_PROFILE`; each ``replace`` keyword swaps the
    line ``key = ...`` for ``key = <value>`` (a TOML literal), or drops it for None.
    """

    def write(text: str | None = None, name: str = "example", **replace: str | None) -> Path:
        body = text if text is not None else VALID_PROFILE.format(id=name)
        for key, value in replace.items():
            lines = body.splitlines()
            index = next(i for i, line in enumerate(lines) if line.startswith(f"{key} ="))
            if value is None:
                del lines[index]
            else:
                lines[index] = f"{key} = {value}"
            body = "\n".join(lines) + "\n"
        path = profile_dir / f"{name}.toml"
        path.write_text(body)
        return path

    return write


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def rsa_pem() -> bytes:
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def ec_pem() -> bytes:
    return _pem(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(params=["ES256", "PS256"])
def signer(request: pytest.FixtureRequest, rsa_pem: bytes, ec_pem: bytes) -> PemSigner:
    pem = ec_pem if request.param == "ES256" else rsa_pem
    return PemSigner.from_pem(pem, key_id="test-key")
