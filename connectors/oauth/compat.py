"""Does what a bank advertises fit what its profile asks for?

Used twice: by `BankOAuthClient.metadata()`, which refuses an incompatible bank before
any user is sent there, and by ``aggregator banks check``, which prints the findings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from connectors.oauth.rfc8414 import ServerMetadata
from connectors.oauth.rfc9449 import DPOP_ALGORITHMS
from connectors.profiles import BankProfile, ClientAuthMethod, ParMode, SenderConstraint

__all__ = ["Compatibility", "Finding", "Severity", "check_compatibility"]


class Severity(enum.Enum):
    PROBLEM = "problem"  # the client refuses to use this bank until it is fixed
    WARNING = "warning"  # works, but weaker or likely to fail somewhere; logged at start-up
    INFO = "info"  # a supported feature, for the operator's report


@dataclass(frozen=True)
class Finding:
    severity: Severity
    topic: str
    message: str


@dataclass(frozen=True)
class Compatibility:
    """The plan (PKCE method, whether to push) and the findings that led to it."""

    pkce_method: str | None
    use_par: bool
    findings: tuple[Finding, ...]

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity is Severity.PROBLEM)

    @property
    def ok(self) -> bool:
        return not self.problems


def check_compatibility(
    profile: BankProfile, metadata: ServerMetadata, *, signing_alg: str | None = None
) -> Compatibility:
    """Compare `profile` with `metadata`; `signing_alg` is the private_key_jwt key's."""
    findings: list[Finding] = []
    pkce = _pkce(profile, metadata, findings)
    use_par = _par(profile, metadata, findings)
    _issuer_parameter(metadata, findings)
    _client_auth(profile, metadata, findings, signing_alg or profile.signing_alg)
    _revocation(profile, metadata, findings)
    _scopes(profile, metadata, findings)
    _sender_constraint(profile, metadata, findings)
    return Compatibility(pkce_method=pkce, use_par=use_par, findings=tuple(findings))


def _add(findings: list[Finding], severity: Severity, topic: str, message: str) -> None:
    findings.append(Finding(severity, topic, message))


def _pkce(profile: BankProfile, md: ServerMetadata, out: list[Finding]) -> str | None:
    methods = md.code_challenge_methods_supported
    if "S256" in methods:
        _add(out, Severity.INFO, "pkce", "PKCE S256 supported")
        return "S256"
    listed = ", ".join(methods) or "none advertised"
    if profile.allow_plain_pkce:
        _add(
            out,
            Severity.WARNING,
            "pkce",
            f"PKCE S256 not supported ({listed}); using plain because allow_plain_pkce is set",
        )
        return "plain"
    _add(
        out,
        Severity.PROBLEM,
        "pkce",
        f"PKCE S256 not supported ({listed}); the client requires it (RFC 7636 §4.2)",
    )
    return None


def _par(profile: BankProfile, md: ServerMetadata, out: list[Finding]) -> bool:
    endpoint = md.pushed_authorization_request_endpoint
    required = md.require_pushed_authorization_requests
    offered = f"PAR {'required' if required else 'offered'}" if endpoint else "PAR not offered"
    if required and not endpoint:
        _add(out, Severity.PROBLEM, "par", "the bank requires PAR but names no PAR endpoint")
        return False
    if profile.use_par is ParMode.NEVER:
        if required:
            _add(out, Severity.PROBLEM, "par", f"{offered}, but the profile sets use_par = false")
            return False
        _add(out, Severity.INFO, "par", f"{offered}; not used (use_par = false)")
        return False
    if profile.use_par is ParMode.ALWAYS and not endpoint:
        _add(out, Severity.PROBLEM, "par", "the profile sets use_par = true; the bank has no PAR")
        return False
    _add(out, Severity.INFO, "par", f"{offered}; used" if endpoint else offered)
    return endpoint is not None


def _issuer_parameter(md: ServerMetadata, out: list[Finding]) -> None:
    if md.authorization_response_iss_parameter_supported:
        _add(out, Severity.INFO, "iss", "RFC 9207 iss parameter advertised; required in callbacks")
    else:
        _add(out, Severity.INFO, "iss", "RFC 9207 iss parameter not advertised; checked if sent")


def _client_auth(
    profile: BankProfile, md: ServerMetadata, out: list[Finding], alg: str | None
) -> None:
    method = profile.client_auth_method.value
    supported = md.token_endpoint_auth_methods_supported
    if method not in supported:
        _add(
            out,
            Severity.PROBLEM,
            "client_auth",
            f"token endpoint does not accept {method} (it accepts: {', '.join(supported)})",
        )
    else:
        _add(out, Severity.INFO, "client_auth", f"token endpoint accepts {method}")
    algs = md.token_endpoint_auth_signing_alg_values_supported
    jwt_auth = profile.client_auth_method is ClientAuthMethod.PRIVATE_KEY_JWT
    if jwt_auth and alg and algs and alg not in algs:
        _add(
            out,
            Severity.PROBLEM,
            "client_auth",
            f"bank does not accept {alg} client assertions (it accepts: {', '.join(algs)})",
        )


def _revocation(profile: BankProfile, md: ServerMetadata, out: list[Finding]) -> None:
    if not md.revocation_endpoint:
        _add(
            out,
            Severity.WARNING,
            "revocation",
            "no revocation endpoint (RFC 7009): erasure cannot revoke grants at this bank",
        )
        return
    method = profile.client_auth_method.value
    if method not in md.revocation_endpoint_auth_methods_supported:
        _add(
            out,
            Severity.WARNING,
            "revocation",
            f"revocation endpoint does not list {method}; revocation may fail",
        )
    else:
        _add(out, Severity.INFO, "revocation", "revocation endpoint (RFC 7009) available")


def _scopes(profile: BankProfile, md: ServerMetadata, out: list[Finding]) -> None:
    if md.scopes_supported is not None:
        missing = [s for s in profile.scopes if s not in md.scopes_supported]
        if missing:
            _add(
                out,
                Severity.WARNING,
                "scopes",
                f"scopes not advertised by the bank: {', '.join(missing)}",
            )
    if "offline_access" in profile.scopes:
        prompts = profile.extra_authorize_params.get("prompt", "").split()
        hooked = any(h.name == "prompt_consent_for_offline_access" for h in profile.hooks)
        if "consent" not in prompts and not hooked:
            _add(
                out,
                Severity.WARNING,
                "scopes",
                "offline_access without prompt=consent: OIDC servers drop it (OIDC Core §11); "
                "add the prompt_consent_for_offline_access hook",
            )


def _sender_constraint(profile: BankProfile, md: ServerMetadata, out: list[Finding]) -> None:
    """RFC 9449 §5.1 / RFC 8705 §3.3: does the bank announce the binding the profile asks?"""
    if profile.sender_constraint is SenderConstraint.DPOP:
        algs = md.raw.get("dpop_signing_alg_values_supported")
        if not isinstance(algs, list):
            _add(out, Severity.WARNING, "dpop", "the bank does not advertise DPoP "
                 "(dpop_signing_alg_values_supported); proofs are sent as ES256")
        elif not [a for a in DPOP_ALGORITHMS if a in algs]:
            _add(out, Severity.PROBLEM, "dpop", "no DPoP signing algorithm in common "
                 f"(we sign {', '.join(DPOP_ALGORITHMS)})")
        else:
            _add(out, Severity.INFO, "dpop", "DPoP-bound tokens (RFC 9449)")
    elif profile.sender_constraint is SenderConstraint.MTLS:
        if md.raw.get("tls_client_certificate_bound_access_tokens") is not True:
            _add(out, Severity.WARNING, "mtls", "the bank does not advertise "
                 "tls_client_certificate_bound_access_tokens (RFC 8705 §3.3)")
        else:
            _add(out, Severity.INFO, "mtls", "certificate-bound tokens (RFC 8705)")
