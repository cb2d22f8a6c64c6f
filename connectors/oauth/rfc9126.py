"""Pushed Authorization Requests (RFC 9126), client side.

authlib's client has no PAR, so this is ours. Pushing keeps the authorization parameters
(PKCE challenge, scope, redirect URI) out of the browser, where they could be read or
altered, and lets the bank authenticate the client before the user sees anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx

from connectors.errors import BankProtocolError
from connectors.oauth.boundary import map_bank_errors, oauth_error, raise_for_unavailable

__all__ = ["PushedRequest", "authorization_url", "push_authorization_request"]


@dataclass(frozen=True)
class PushedRequest:
    """The PAR endpoint's answer (RFC 9126 §2.2): a one-time reference and its lifetime."""

    request_uri: str
    expires_in: int


async def push_authorization_request(
    http: httpx.AsyncClient,
    endpoint: str,
    params: Mapping[str, str],
    *,
    auth: httpx.Auth,
    http_timeout: httpx.Timeout,
    bank: str,
) -> PushedRequest:
    """POST the authorization request parameters to the PAR endpoint.

    - §2.1: the body is the form-encoded authorization request, plus the client's
      authentication (`auth`: the same method as at the token endpoint).
    - §2.2: success is ``201 Created`` with a JSON ``request_uri`` and a positive
      ``expires_in``; 200 is tolerated, as some deployments send it.
    - §2.3: an error is a JSON OAuth error; 429 and 5xx mean try later.
    """
    with map_bank_errors(bank, "pushed authorization request"):
        response = await http.post(endpoint, data=dict(params), auth=auth, timeout=http_timeout)
    raise_for_unavailable(response, bank, "pushed authorization request")
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code not in (200, 201):
        if isinstance(body, dict) and "error" in body:
            raise oauth_error(body["error"], bank, "pushed authorization request")
        raise BankProtocolError(
            f"{bank}: pushed authorization request: unexpected HTTP {response.status_code}"
        )
    if not isinstance(body, dict):
        raise BankProtocolError(f"{bank}: pushed authorization request: answer is not JSON")
    request_uri, expires_in = body.get("request_uri"), body.get("expires_in")
    if not isinstance(request_uri, str) or not request_uri:
        raise BankProtocolError(f"{bank}: pushed authorization request: no request_uri")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
        raise BankProtocolError(f"{bank}: pushed authorization request: bad expires_in")
    return PushedRequest(request_uri=request_uri, expires_in=expires_in)


def authorization_url(authorization_endpoint: str, params: Mapping[str, str]) -> str:
    """`authorization_endpoint` with `params` added to any query it already has.

    After a push, §4 sends only ``client_id`` and ``request_uri``; without PAR it is
    the full request (RFC 6749 §4.1.1).
    """
    return str(httpx.URL(authorization_endpoint).copy_merge_params(dict(params)))
