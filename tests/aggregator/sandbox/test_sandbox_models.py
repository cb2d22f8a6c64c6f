from __future__ import annotations

import pytest

from aggregator.errors import ConfigError
from aggregator.sandbox import SandboxBank, SandboxClient, SandboxConfig
from aggregator.sandbox.models import redirect_uri_matches
from aggregator.sandbox.testing import ClientKey


@pytest.mark.parametrize(
    ("registered", "requested", "expected"),
    [
        ("http://127.0.0.1/cb", "http://127.0.0.1/cb", True),
        ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb", True),
        ("http://localhost/cb", "http://localhost:8080/cb", True),
        ("http://[::1]/cb", "http://[::1]:8080/cb", True),
        ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb2", False),
        ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb?x=1", False),
        ("http://127.0.0.1/cb", "http://localhost:51234/cb", False),
        ("http://127.0.0.1/cb", "https://127.0.0.1:51234/cb", False),
        ("http://127.0.0.1/cb", "http://evil@127.0.0.1:1/cb", False),
        ("http://127.0.0.1/cb", "http://127.0.0.1:99999/cb", False),
        ("https://app.example/cb", "https://app.example:444/cb", False),
        ("https://app.example/cb", "https://app.example/cb", True),
    ],
)
def test_redirect_uri_matching_follows_rfc8252_for_loopback_only(
    registered: str, requested: str, expected: bool
) -> None:
    assert redirect_uri_matches(registered, requested) is expected


@pytest.mark.parametrize(
    "settings",
    [
        {"client_id": "c", "redirect_uris": ["http://127.0.0.1/cb"]},  # secret methods, no secret
        {"client_id": "c", "client_secret": "s", "redirect_uris": []},
        {"client_id": "c", "client_secret": "s", "redirect_uris": ["x"], "auth_methods": ["none"]},
        {"client_id": "c", "client_secret": "s", "redirect_uris": ["x"], "scopes": ["payments"]},
    ],
)
def test_client_settings_are_checked_at_start_up(settings: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SandboxClient(**settings)  # type: ignore[arg-type]


def test_private_jwk_is_refused_at_registration() -> None:

    private = ClientKey().private.as_dict(private=True)
    client = SandboxClient(
        client_id="c",
        redirect_uris=["http://127.0.0.1/cb"],
        auth_methods=["private_key_jwt"],
        jwks=private,
    )
    with pytest.raises(ConfigError):
        SandboxBank(SandboxConfig(clients=[client]))


def test_secret_is_not_in_the_client_repr() -> None:
    client = SandboxClient(
        client_id="c", client_secret="very-secret", redirect_uris=["http://127.0.0.1/cb"]
    )

    assert "very-secret" not in repr(client)


def test_the_documented_contract_example_constructs() -> None:
    client = SandboxClient(
        client_id="c1",
        client_secret="s1",
        redirect_uris=["http://127.0.0.1/cb"],
        auth_methods=["client_secret_basic", "client_secret_post", "private_key_jwt"],
        jwks=None,
    )

    bank = SandboxBank(SandboxConfig(clients=[client], access_token_ttl=300, require_par=False))

    assert bank.server.query_client("c1") is not None
