"""RFC 9207: the ``iss`` authorization response parameter, against mix-up attacks.

In a mix-up attack (RFC 9700 §4.4) an attacker makes the client send a code issued by
one authorization server to another; the client can only tell if the response says who
issued it. This module is the check, as a pure function.
"""

from __future__ import annotations

from connectors.errors import IssuerMismatch

__all__ = ["check_issuer"]


def check_issuer(iss: str | None, expected_issuer: str, *, iss_supported: bool) -> None:
    """Accept the authorization response's `iss` or raise :class:`IssuerMismatch`.

    - RFC 9207 §2.4: when `iss` is present it must equal the expected issuer by simple
      string comparison (RFC 3986 §6.2.1), without any normalisation; this applies even
      if the bank never advertised the parameter.
    - RFC 9207 §2.4: when the bank's metadata sets
      ``authorization_response_iss_parameter_supported`` (`iss_supported`), a response
      without `iss` is rejected: stripping it is how the attack would hide.

    Example::

        check_issuer(query.get("iss"), metadata.issuer,
                     iss_supported=metadata.authorization_response_iss_parameter_supported)
    """
    if iss is None:
        if iss_supported:
            raise IssuerMismatch(
                "authorization response has no 'iss' although the bank advertises it"
            )
        return
    if iss != expected_issuer:
        # Naming the received value is safe: it is an issuer URL, not a credential, and
        # the operator needs it to tell an attack from a misconfigured profile.
        raise IssuerMismatch(
            f"authorization response issued by {iss[:200]!r}, expected {expected_issuer!r}"
        )
