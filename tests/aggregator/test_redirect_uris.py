"""Redirect URIs an application may register: exact, unambiguous, https (RFC 9700 §4.1)."""

from __future__ import annotations

import pytest

from aggregator.commands.apps import check_redirect_uri
from aggregator.errors import ConfigError
from aggregator.redirect_uris import redirect_uri_problem


@pytest.mark.parametrize(("uri", "why"), [
    ("https://app.example@evil.example/cb", "userinfo"),
    ("https://user:pw@app.example/cb", "userinfo"),
    ("https://evil.example\\@app.example/cb", "backslash"),
    ("https://app.example/cb\r\nSet-Cookie: x=1", "control"),
    ("https://app.example/c b", "control"),
    ("https://*.app.example/cb", "wildcard"),
    ("https://app.example/*", "wildcard"),
    ("https://%61pp.example/cb", "percent-encode its host"),
    ("https://app.example/cb#frag", "fragment"),
    ("http://app.example/cb", "https"),
    ("https://app_example/cb", "valid host name"),
    ("budgetly://cb", "https"),
])
def test_ambiguous_or_unsafe_redirect_uris_are_refused_with_the_reason(uri: str,
                                                                       why: str) -> None:
    assert why in (redirect_uri_problem(uri) or "")
    with pytest.raises(ConfigError, match="--redirect-uri"):
        check_redirect_uri(uri)


@pytest.mark.parametrize("uri", [
    "https://app.example/linked?from=gateway", "https://app.example:8443/cb",
    "http://127.0.0.1:3000/cb", "http://[::1]:3000/cb", "http://localhost/cb",
    "https://192.0.2.10/cb",
])
def test_plain_https_and_loopback_http_uris_are_accepted(uri: str) -> None:
    assert redirect_uri_problem(uri) is None
    assert check_redirect_uri(uri) == uri
