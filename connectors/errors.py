"""Errors raised by connectors, one tree rooted at :class:`ConnectorError`.

::

    ConnectorError
    ├── ProfileError            a bank profile file is invalid (names file, key, problem)
    ├── BankProtocolError       the bank answered something malformed or non-conforming
    │   ├── ResponseTooLarge    an answer passed the egress policy's size or time limit
    │   ├── ResourceNotPermitted  403 on one resource: the consent lacks that permission
    │   ├── ResourceNotOffered  404/501 on one resource: the bank does not offer it
    │   ├── StateMismatch       callback `state` missing, replayed or foreign
    │   │   └── AuthorizationExpired  the pending authorization outlived its 10 minutes
    │   └── IssuerMismatch      RFC 9207 `iss` wrong or missing (mix-up attack)
    ├── BankUnsupported         the bank lacks what the profile needs (PKCE S256, PAR, auth method)
    │   └── BankMisconfigured   the bank refuses our configuration (invalid_client, PAR required,
    │                           redirect_uri, invalid_scope); `reason` and `setting` name it
    ├── ConsentRejected         the user (or the bank) denied the authorization request
    ├── GrantRevoked            `invalid_grant`: the grant is gone, the user must re-consent
    │   ├── ItemLoginRequired   Plaid `ITEM_LOGIN_REQUIRED`: re-consent through update mode
    │   └── ConsentInvalid      the bank's consent resource is rejected, revoked, expired
    │                           or unknown (connectors/consents)
    ├── BankUnavailable         timeouts, 5xx, 429; carries `retry_after` seconds if known
    │   ├── MutationDuringPagination  Plaid data changed mid-`/transactions/sync`
    │   └── EgressRefused       the outbound policy refused the destination (SSRF guard);
    │                           nothing was sent
    └── WebhookRejected         a Plaid webhook failed verification; `reason` says which check
                                (plaid/reasons.py)

Messages never contain a token, code, verifier or secret: callers log them as they are.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error a connector raises."""

    code = "connector_error"


class ProfileError(ConnectorError):
    """A bank profile is invalid; raised at start-up by the loader, never at the first user."""

    code = "invalid_bank_profile"

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}")


class BankProtocolError(ConnectorError):
    """The bank's answer is malformed or breaks the protocol it claims to speak."""

    code = "bank_protocol_error"


class StateMismatch(BankProtocolError):
    """The callback's `state` is missing, already used, or belongs to another session."""

    code = "state_mismatch"


class IssuerMismatch(BankProtocolError):
    """The authorization response's `iss` differs from the bank's issuer (RFC 9207 §2.4)."""

    code = "issuer_mismatch"


class AuthorizationExpired(StateMismatch):
    """The callback arrived after the pending authorization expired; start a new link."""

    code = "authorization_expired"


class BankUnsupported(ConnectorError):
    """The bank's metadata lacks a feature the profile requires; found at discovery time."""

    code = "bank_unsupported"


class BankMisconfigured(BankUnsupported):
    """The bank refused how we are set up to talk to it, not the user and not an outage:
    ``invalid_client``, ``unauthorized_client``, ``invalid_scope``, a redirect URI it does
    not know, PAR it requires but the profile turns off. Only an operator can fix it.

    ``reason`` is one of :data:`MISCONFIGURATIONS`; ``setting`` the bank profile key (or
    gateway setting) to look at. Both are codes, safe to log and count.
    """

    code = "bank_misconfigured"

    def __init__(self, message: str, *, reason: str, setting: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.setting = setting


#: ``reason`` of a :class:`BankMisconfigured` → the profile setting it points at.
MISCONFIGURATIONS: dict[str, str] = {
    "invalid_client": "client_auth_method",  # or the secret/key it names
    "unauthorized_client": "client_id",
    "invalid_scope": "scopes",
    "redirect_uri_mismatch": "redirect_uri",
    "par_required": "use_par",
    "unsupported": "profile",
    "registration_refused": "registration",  # RFC 7591 §3.2.2: our client metadata
}


class ConsentRejected(ConnectorError):
    """The user declined consent at the bank (`access_denied` and kin)."""

    code = "consent_rejected"


class GrantRevoked(ConnectorError):
    """The bank answered `invalid_grant`: the code or refresh token is dead; re-consent."""

    code = "grant_revoked"


class ItemLoginRequired(GrantRevoked):
    """Plaid answered ``ITEM_LOGIN_REQUIRED``: only the user can repair the Item (update mode)."""

    code = "item_login_required"


class BankUnavailable(ConnectorError):
    """The bank could not be reached or asked us to back off; retry after `retry_after` s."""

    code = "bank_unavailable"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class EgressRefused(BankUnavailable):
    """The outbound policy refused a URL or a resolved address (server-side request
    forgery guard, :mod:`connectors.egress`) before anything was sent; the message says
    why, never the URL. To a worker it is an unreachable bank: back off, nothing rotated."""

    def __init__(self, message: str) -> None:
        super().__init__(message)

    code = "egress_refused"


class ResponseTooLarge(BankProtocolError):
    """An answer was longer, or took longer to arrive, than the outbound policy allows;
    the request was sent and may have had its effect (a rotated refresh token)."""

    code = "response_too_large"


class ResourceNotPermitted(BankProtocolError):
    """The bank answered 403 for one resource (balances, transactions…) of an account: the
    consent does not cover it. A sync records it and reads the other resources."""

    code = "not_permitted"


class ResourceNotOffered(BankProtocolError):
    """The bank answered 404 or 501 for one resource of an account: it does not offer it
    (RFC 9110 §15.6.2: 501, the method is not supported for any resource). A sync records
    it and reads the other resources."""

    code = "not_offered"


class ConsentInvalid(GrantRevoked):
    """The bank reports the consent resource dead: rejected, revoked, expired or unknown.

    OBIE ``Status`` Rejected/Revoked or an ``ExpirationDateTime`` passed; Berlin Group
    ``CONSENT_EXPIRED``/``CONSENT_INVALID``/``CONSENT_UNKNOWN``. A ``GrantRevoked``, so
    the connection becomes ``reauth_required`` like any dead grant; ``state`` says which.
    """

    code = "consent_invalid"

    def __init__(self, message: str, state: str = "unknown") -> None:
        self.state = state
        super().__init__(message)
