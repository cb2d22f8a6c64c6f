"""Consent resources of regulated banks (UK Open Banking, Berlin Group): see ``base``.

:func:`consent_manager` builds the :class:`ConsentManager` a profile's ``standard``
names, or None for a plain OAuth2 bank. Each standard's implementation is a module here
(``obie.py``, ``berlin_group.py``), imported only when a profile uses it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from connectors.consents.base import (
    ConsentManager,
    ConsentRequest,
    ConsentState,
    CreatedConsent,
    GrantedConsent,
    Standard,
    UserPresence,
)

if TYPE_CHECKING:
    import httpx

    from connectors.oauth.client import BankOAuthClient
    from connectors.profiles import BankProfile

__all__ = [
    "ConsentManager",
    "ConsentRequest",
    "ConsentState",
    "CreatedConsent",
    "GrantedConsent",
    "Standard",
    "UserPresence",
    "consent_manager",
]

#: Where each standard's manager lives: ``module:Class``, built as ``Class(profile, oauth,
#: http)`` with the bank's OAuth client (client-credentials tokens, the request signer)
#: and the HTTP client that presents the bank's transport certificate.
IMPLEMENTATIONS: dict[Standard, str] = {
    Standard.OBIE: "connectors.consents.obie:ObieConsents",
    Standard.BERLIN_GROUP: "connectors.consents.berlin_group:BerlinGroupConsents",
}


def consent_manager(
    profile: BankProfile, oauth: BankOAuthClient, http: httpx.AsyncClient
) -> ConsentManager | None:
    """The consent manager of ``profile``'s standard; None for ``standard = "oauth2"``."""
    if profile.standard is Standard.OAUTH2:
        return None
    module, _, name = IMPLEMENTATIONS[profile.standard].partition(":")
    cls = getattr(importlib.import_module(module), name)
    manager: ConsentManager = cls(profile, oauth, http)
    return manager
