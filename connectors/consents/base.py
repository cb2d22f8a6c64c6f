"""The consent seam: what a regulated bank needs around the OAuth flow, one Protocol.

UK Open Banking and Berlin Group NextGenPSD2 both make the third party create a consent
*resource* at the bank before the user is sent there, tie the authorization to it, read
its status afterwards, name it (or its token) on every account call, and delete it when
the user leaves. A plain OAuth2 bank has none of this. A bank profile names its
``standard`` (``"oauth2"``, ``"obie"``, ``"berlin_group"``); for the two regulated ones
:func:`connectors.consents.consent_manager` builds a :class:`ConsentManager`, and the
gateway calls it at the same five points whichever standard it is::

      Link page: user picks bank
        │   create(ConsentRequest)  ─────────────►  POST /account-access-consents  (OBIE)
        │                                           POST /v1/consents              (Berlin)
        ▼   returns CreatedConsent (id, status, what the callback needs)
      authorization_params(created, params)  ──►  OBIE: a signed request object carrying
        │   (or created.redirect_url: the bank's     claims.id_token.openbanking_intent_id
        │    own SCA page, no OAuth at all)          Berlin OAuth: scope=AIS:{consentId}
        ▼
      user authenticates at the bank, comes back to /link/callback
        │   confirm(created)  ───────────────────►  GET …/{id}: Authorised / valid, or
        ▼   returns GrantedConsent(expires_at)       ConsentInvalid (rejected, revoked)
      connection.consent_id, consent_expires_at ◄─┘
        │
      every sync: resource_headers(consent_id, presence)  (x-fapi-*, Consent-ID, PSU-IP-…)
        │   a 401/403 from the API: status(consent_id) tells "consent dead" (ConsentInvalid →
        │   reauth_required) from "this resource is not covered" (skip it)
        ▼
      removal, update-mode re-consent, erasure: revoke(consent_id)  ─►  DELETE …/{id}

Example (what :class:`aggregator.link.flow.LinkFlow` does)::

    manager = banks.consents(bank_id)              # None for a plain OAuth2 bank
    created = await manager.create(ConsentRequest(callback_url=url, state=state,
                                                  presence=UserPresence(ip)))
    pending, url = await oauth.start_authorization(
        url, state=state,
        customize=lambda params: manager.authorization_params(created, params))
    ...                                            # the callback
    granted = await manager.confirm(created)
    connection.consent_id, connection.consent_expires_at = granted.id, granted.expires_at
    ...
    headers = manager.resource_headers(connection.consent_id, UserPresence(ip))
    await manager.revoke(connection.consent_id)

Implementations raise only :class:`~connectors.errors.ConnectorError` subclasses; a
consent the bank reports dead is :class:`~connectors.errors.ConsentInvalid`, which is a
:class:`~connectors.errors.GrantRevoked`, so every path that already turns a dead grant
into ``reauth_required`` handles it unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

__all__ = [
    "ConsentManager",
    "ConsentRequest",
    "ConsentState",
    "CreatedConsent",
    "GrantedConsent",
    "Standard",
    "UserPresence",
]


class Standard(enum.StrEnum):
    """What a bank profile's ``standard`` key may say."""

    OAUTH2 = "oauth2"  # no consent resource: the OAuth grant is the consent
    OBIE = "obie"  # UK Open Banking Read/Write API v3.1 account-access-consents
    BERLIN_GROUP = "berlin_group"  # NextGenPSD2 XS2A v1.3 /v1/consents


class ConsentState(enum.Enum):
    """A consent resource's status, mapped from each standard's own words."""

    AWAITING = "awaiting"  # created; the user has not authorised it (yet)
    AUTHORISED = "authorised"  # usable: OBIE `Authorised`, Berlin `valid`
    REJECTED = "rejected"  # the user or the bank refused it during authorisation
    REVOKED = "revoked"  # ended by the user at the bank, or by us (DELETE)
    EXPIRED = "expired"  # its validity period is over
    UNKNOWN = "unknown"  # the bank no longer knows the id

    @property
    def dead(self) -> bool:
        """Only the user can mend it: the connection becomes ``reauth_required``."""
        return self not in (ConsentState.AWAITING, ConsentState.AUTHORISED)


@dataclass(frozen=True, slots=True)
class UserPresence:
    """Whether the user is at the screen for this call, and from where.

    A call is *user-present* when the gateway knows the user's IP address for it: the
    Link page's own request (the first sync after linking), or an on-demand sync whose
    caller forwards the user's address (``X-Customer-IP-Address`` on
    ``POST /v1/connections/{id}/sync``). Only then do banks see the address
    (OBIE ``x-fapi-customer-ip-address``, Berlin ``PSU-IP-Address``); its absence is what
    makes a call unattended and count against the bank's daily allowance (PSD2 RTS
    Art. 36(5)). ``auth_date`` is when the user last authenticated for this connection
    (OBIE ``x-fapi-auth-date``).
    """

    ip_address: str | None = None
    auth_date: datetime | None = None

    @property
    def present(self) -> bool:
        return self.ip_address is not None


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """What :meth:`ConsentManager.create` needs: from the Link flow and the profile.

    ``callback_url`` is the gateway's redirect URI; ``state`` the link's ``state``, so a
    standard without OAuth (Berlin's redirect approach) can put it in its own return URL.
    ``valid_until`` ends the consent (the profile's consent period from now, or None for
    the bank's default). ``account_ids`` narrows it (Berlin's two-step detailed consent).
    """

    callback_url: str
    state: str
    valid_until: datetime | None = None
    presence: UserPresence = field(default_factory=UserPresence)
    account_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CreatedConsent:
    """A consent resource at the bank, awaiting the user.

    ``data`` is whatever the standard must remember until the callback (plain strings,
    no secrets: it is stored, sealed, with the link session). A key ``id_token.<claim>``
    demands an ID token in the authorization response (the hybrid flow) carrying that
    claim with that value, checked as a detached signature (connectors/oauth/hybrid.py;
    OBIE: ``id_token.openbanking_intent_id``). ``redirect_url`` set means the bank's own
    SCA page replaces the OAuth authorization request (Berlin ``scaRedirect``); the
    callback then carries no code.
    """

    id: str
    state: ConsentState
    redirect_url: str | None = None
    data: Mapping[str, str] = field(default_factory=dict)

    @property
    def id_token_claims(self) -> dict[str, str]:
        """Claims the front channel's ID token must carry (empty: none is required)."""
        prefix = "id_token."
        return {k.removeprefix(prefix): v for k, v in self.data.items() if k.startswith(prefix)}

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state.value, "redirect_url": self.redirect_url,
                "data": dict(self.data)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> CreatedConsent:
        return cls(id=str(raw["id"]), state=ConsentState(raw["state"]),
                   redirect_url=raw.get("redirect_url"),
                   data={str(k): str(v) for k, v in (raw.get("data") or {}).items()})


@dataclass(frozen=True, slots=True)
class GrantedConsent:
    """An authorised consent: its id and when the bank says it ends (None: no end)."""

    id: str
    expires_at: datetime | None
    account_ids: tuple[str, ...] = ()


@runtime_checkable
class ConsentManager(Protocol):
    """One bank's consent resource lifecycle (see the module docstring for the picture).

    Contract for implementations:

    - every method may raise ``BankUnavailable`` (retry later) or ``BankProtocolError``;
      a consent the bank says is dead raises ``ConsentInvalid`` (a ``GrantRevoked``);
    - nothing secret goes into a return value other than the authorization request's
      own parameters, and nothing secret into a log line or an exception message;
    - :meth:`revoke` of a consent the bank no longer knows is success (as RFC 7009 §2.2
      treats an unknown token): removal and erasure retry it safely.
    """

    standard: ClassVar[Standard]

    async def create(self, request: ConsentRequest) -> CreatedConsent:
        """Create the consent resource before the user is redirected."""
        ...

    async def authorization_params(
        self, created: CreatedConsent, params: Mapping[str, str]
    ) -> dict[str, str]:
        """The authorization request's parameters, given the OAuth client's own.

        ``params`` holds ``response_type``, ``client_id``, ``redirect_uri``, ``scope``,
        ``state``, ``nonce`` and the PKCE challenge; the answer replaces them (OBIE wraps
        them in a signed request object; Berlin adds ``AIS:{consentId}`` to the scope).
        Never called when ``created.redirect_url`` is set.
        """
        ...

    async def confirm(self, created: CreatedConsent) -> GrantedConsent:
        """After the callback: the consent must be authorised; returns its expiry."""
        ...

    async def status(self, consent_id: str) -> ConsentState:
        """The consent's state now (used to tell a dead consent from a refused resource)."""
        ...

    def resource_headers(
        self, consent_id: str, presence: UserPresence | None
    ) -> dict[str, str]:
        """Headers for every account API call made under this consent.

        ``presence`` None (or without an address) is an unattended call.
        """
        ...

    async def revoke(self, consent_id: str) -> None:
        """Delete the consent at the bank; an unknown or already deleted one is success."""
        ...
