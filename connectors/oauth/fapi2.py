"""FAPI 2.0 Security Profile readiness: does a bank and its profile meet §5.3?

``aggregator banks check`` prints these findings. For a profile that sender-constrains
its tokens (``sender_constraint`` ``"dpop"`` or ``"mtls"``, i.e. the operator says the
bank is a FAPI 2.0 bank) each unmet requirement is a problem; for any other profile
they are warnings, a report of how far the bank is from FAPI 2.0. What is checked, from
the bank's metadata and the profile (FAPI 2.0 Security Profile, final):

- §5.3.2.2 item 2: pushed authorization requests required (RFC 9126), and the profile
  pushes them;
- §5.3.2.2 item 5 / §5.3.3.4: PKCE with S256 only;
- §5.3.2.2 item 8 / §5.3.3.3: ``iss`` in the authorization response (RFC 9207);
- §5.3.2.1 item 1: sender-constrained access tokens — DPoP (RFC 9449) with a signing
  algorithm in common, or mTLS certificate binding (RFC 8705 §3);
- §5.3.2.1 item 2 / §5.3.3.2: client authentication by ``private_key_jwt`` or mTLS,
  offered by the bank;
- §5.4: signed request objects (RFC 9101), where the bank takes them, only with PS256,
  ES256 or EdDSA — never ``none``.
"""

from __future__ import annotations

from collections.abc import Callable

from connectors.oauth.compat import Finding, Severity
from connectors.oauth.rfc8414 import ServerMetadata
from connectors.oauth.rfc9449 import DPOP_ALGORITHMS
from connectors.profiles import BankProfile, ClientAuthMethod, ParMode, SenderConstraint

__all__ = ["fapi2_readiness"]

#: FAPI 2.0 §5.4: the JWS algorithms allowed for anything signed.
_Check = Callable[[bool, str, str], None]
_FAPI_ALGORITHMS = frozenset({"PS256", "ES256", "EdDSA"})
_FAPI_CLIENT_AUTH = frozenset({
    ClientAuthMethod.PRIVATE_KEY_JWT, ClientAuthMethod.TLS_CLIENT_AUTH,
    ClientAuthMethod.SELF_SIGNED_TLS_CLIENT_AUTH,
})


def fapi2_readiness(profile: BankProfile, md: ServerMetadata) -> tuple[Finding, ...]:
    """One finding per requirement; see the module docstring."""
    claimed = profile.sender_constraint is not SenderConstraint.NONE
    unmet = Severity.PROBLEM if claimed else Severity.WARNING
    out: list[Finding] = []

    def check(ok: bool, good: str, bad: str) -> None:
        out.append(Finding(Severity.INFO if ok else unmet, "fapi2", good if ok else bad))

    par_required = bool(md.require_pushed_authorization_requests
                        and md.pushed_authorization_request_endpoint)
    check(par_required, "PAR required by the bank",
          "the bank does not require PAR (§5.3.2.2)")
    check(profile.use_par is not ParMode.NEVER and md.pushed_authorization_request_endpoint
          is not None, "the profile pushes authorization requests",
          "the profile does not push authorization requests (use_par)")
    methods = md.code_challenge_methods_supported
    check("S256" in methods and "plain" not in methods and not profile.allow_plain_pkce,
          "PKCE S256 only", "PKCE S256 only is required; the bank or profile allows less")
    check(md.authorization_response_iss_parameter_supported,
          "iss in the authorization response (RFC 9207)",
          "the bank does not announce iss in authorization responses (RFC 9207)")
    _sender_constraint(profile, md, check)
    method = profile.client_auth_method
    check(method in _FAPI_CLIENT_AUTH and method.value in md.token_endpoint_auth_methods_supported,
          f"client authentication {method.value}, offered by the bank",
          f"client authentication must be private_key_jwt or mTLS, offered by the bank "
          f"(the profile uses {method.value})")
    request_algs = _strings(md.raw.get("request_object_signing_alg_values_supported"))
    if request_algs or md.raw.get("require_signed_request_object") is True:
        check(bool(request_algs) and set(request_algs) <= _FAPI_ALGORITHMS,
              "signed request objects: PS256/ES256/EdDSA only",
              "signed request objects must use PS256, ES256 or EdDSA only (§5.4); the bank "
              f"lists {', '.join(request_algs) or 'none'}")
    else:
        out.append(Finding(Severity.INFO, "fapi2", "signed request objects: not used"))
    return tuple(out)


def _sender_constraint(profile: BankProfile, md: ServerMetadata, check: _Check) -> None:
    constraint = profile.sender_constraint
    dpop_algs = _strings(md.raw.get("dpop_signing_alg_values_supported"))
    mtls_bound = md.raw.get("tls_client_certificate_bound_access_tokens") is True
    if constraint is SenderConstraint.DPOP:
        common = [a for a in DPOP_ALGORITHMS if a in dpop_algs]
        check(bool(common), f"DPoP-bound tokens ({', '.join(common)})",
              "the bank advertises no DPoP algorithm we sign with "
              "(dpop_signing_alg_values_supported)")
    elif constraint is SenderConstraint.MTLS:
        check(mtls_bound and profile.mutual_tls, "certificate-bound tokens (RFC 8705)",
              "certificate-bound tokens need tls_client_certificate_bound_access_tokens at the "
              "bank and a client certificate in the profile")
    else:
        offered = ("DPoP" if dpop_algs else "") or ("mTLS" if mtls_bound else "")
        check(False, "", "tokens are not sender-constrained (sender_constraint = \"none\")"
              + (f"; the bank offers {offered}" if offered else ""))


def _strings(value: object) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []
