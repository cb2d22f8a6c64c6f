"""What a UK Open Banking bank's metadata must offer for ``standard = "obie"``.

``aggregator banks check`` prints one finding per requirement, each a problem when
unmet (a link would fail at that step), from the OBIE Security Profile and OIDC
Discovery §3:

- the client-credentials grant (``grant_types_supported``), for the consent API token;
- request objects by value (``request_parameter_supported``, default false) or pushed
  (a PAR endpoint), signed with the profile's algorithm
  (``request_object_signing_alg_values_supported``);
- the ``claims`` parameter (``claims_parameter_supported``), which carries
  ``openbanking_intent_id``;
- ``code id_token`` in ``response_types_supported`` and a ``jwks_uri`` when the profile
  asks for the hybrid flow; ``form_post`` among the response modes.
"""

from __future__ import annotations

from connectors.oauth.compat import Finding, Severity
from connectors.oauth.rfc8414 import ServerMetadata
from connectors.profiles import BankProfile

__all__ = ["obie_readiness"]


def obie_readiness(profile: BankProfile, md: ServerMetadata) -> tuple[Finding, ...]:
    """One finding per requirement (empty for a profile of another standard)."""
    if profile.obie is None:
        return ()
    raw = md.raw
    out: list[Finding] = []

    def need(ok: bool, topic: str, met: str, unmet: str) -> None:
        out.append(Finding(Severity.INFO if ok else Severity.PROBLEM, topic,
                           met if ok else unmet))

    grants = raw.get("grant_types_supported") or ["authorization_code", "implicit"]
    need("client_credentials" in grants, "client credentials",
         "client_credentials grant offered", "no client_credentials grant for the consent API")
    by_value = raw.get("request_parameter_supported") is True
    need(by_value or md.pushed_authorization_request_endpoint is not None, "request object",
         "request objects accepted" + (" (pushed)" if not by_value else ""),
         "neither request_parameter_supported nor a PAR endpoint")
    algs = raw.get("request_object_signing_alg_values_supported") or []
    alg = profile.signing_alg or "PS256"
    need(alg in algs, "request object alg", f"{alg} request objects accepted",
         f"{alg} not in request_object_signing_alg_values_supported {algs}")
    need(raw.get("claims_parameter_supported") is True, "claims parameter",
         "claims parameter supported (openbanking_intent_id)",
         "claims_parameter_supported is not true: openbanking_intent_id cannot be asked for")
    if profile.obie.hybrid:
        need("code id_token" in md.response_types_supported, "hybrid flow",
             "code id_token offered", "response_types_supported lacks code id_token")
        modes = raw.get("response_modes_supported") or ["query", "fragment"]
        need("form_post" in modes, "form post", "form_post response mode offered",
             "form_post not in response_modes_supported")
        need(md.jwks_uri is not None, "jwks", "jwks_uri to verify ID tokens",
             "no jwks_uri: the front channel's ID token cannot be verified")
    return tuple(out)
