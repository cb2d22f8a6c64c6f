"""The ``[berlin_group]`` table of a bank profile (``standard = "berlin_group"``).

Parsed at start-up, so a bank that asks for an SCA approach the gateway cannot run fails
before the first user is sent there, naming the file and the key::

    standard = "berlin_group"

    [berlin_group]
    sca_approach = "redirect"        # or "oauth" (_links.scaOAuth, scope AIS:{consentId})
    access = "all_accounts"          # allPsd2; or "available_accounts", "bank_offered",
                                     # "two_step" (list, pick on the Link page, detailed)
    consents_url = "/psd2/v1/consents"   # default: the API base + "/v1/consents"
    status_poll_attempts = 5         # after the user returns: reads of a `received` status
    status_poll_interval_ms = 500
    # Where the bank demands sealed requests (guidelines §12; connectors/dialects/
    # berlin_signing.py): the QSealC and its RSA key (a file, mode 0600, or a variable).
    signing_certificate_file = "qsealc.pem"
    signing_key_file = "qsealc.key"    # or signing_key_pem_env = "EXAMPLEBANK_QSEALC_KEY"

``frequencyPerDay`` is not a key: it is always the profile's ``[sync] daily_budget``, so
the gateway's budget ledger and the bank's count of unattended reads agree (NextGenPSD2
Implementation Guidelines v1.3.x, "Establish Account Information Consent";
PSD2 RTS Art. 36(5)(b)).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from connectors._schema import Table

__all__ = ["BerlinAccess", "BerlinGroupOptions", "ScaApproach", "parse_berlin_options"]


class ScaApproach(enum.StrEnum):
    """How the user authorises a consent (Implementation Guidelines v1.3.x, "SCA Approaches")."""

    OAUTH = "oauth"  # _links.scaOAuth: an OAuth2 code flow with scope AIS:{consentId}
    REDIRECT = "redirect"  # _links.scaRedirect: the bank's own page; back to TPP-Redirect-URI


class BerlinAccess(enum.StrEnum):
    """The ``access`` object of the consent request."""

    ALL_ACCOUNTS = "all_accounts"  # {"allPsd2": "allAccounts"}: every account, all data
    AVAILABLE_ACCOUNTS = "available_accounts"  # {"availableAccounts": "allAccounts"}: list only
    BANK_OFFERED = "bank_offered"  # empty accounts/balances/transactions: the user picks at
    # the bank ("bank-offered consent")
    TWO_STEP = "two_step"  # a one-off availableAccounts consent lists the accounts; the
    # user picks on the Link page; a detailed consent on those IBANs follows


#: Approaches the guidelines define that the gateway refuses, and why.
_REFUSED: Final = {
    "embedded": "embedded SCA would make the gateway collect the user's bank password "
                "and one-time codes; use \"redirect\" or \"oauth\"",
    "decoupled": "decoupled SCA (approval in the bank's app while the gateway polls) is "
                 "not supported; use \"redirect\" or \"oauth\"",
}

_KEYS: Final = frozenset({"sca_approach", "access", "consents_url", "status_poll_attempts",
                          "status_poll_interval_ms", "signing_certificate_file",
                          "signing_key_file", "signing_key_pem_env"})


@dataclass(frozen=True)
class BerlinGroupOptions:
    """A Berlin Group bank's consent settings; see the module docstring."""

    consents_url: str
    sca_approach: ScaApproach = ScaApproach.REDIRECT
    access: BerlinAccess = BerlinAccess.ALL_ACCOUNTS
    status_poll_attempts: int = 5
    status_poll_interval: float = 0.5
    #: QSealC request signing: the certificate, and its key's file or variable name.
    signing_certificate_file: Path | None = None
    signing_key_file: Path | None = None
    signing_key_pem_env: str | None = None


def parse_berlin_options(t: Table, api_base: str, *, base: Path) -> BerlinGroupOptions:
    """Read ``[berlin_group]`` (``t``); ``api_base`` is the profile's ``[api] base_url``,
    ``base`` the profile's directory (relative file names start there)."""
    certificate = t.path("signing_certificate_file", base=base)
    key_file = t.path("signing_key_file", base=base)
    key_env = t.env_name("signing_key_pem_env")
    if certificate is not None and (key_file is None) == (key_env is None):
        raise t.error("signing_key_file", "a signing certificate needs exactly one of "
                                          "signing_key_file and signing_key_pem_env")
    if certificate is None and (key_file or key_env):
        raise t.error("signing_certificate_file", "a signing key needs its certificate")
    approach = t.get("sca_approach", ScaApproach.REDIRECT.value)
    if approach in _REFUSED:
        raise t.error("sca_approach", _REFUSED[approach])
    approach = t.choice("sca_approach", [a.value for a in ScaApproach]) \
        if "sca_approach" in t.names() else approach
    access = t.choice("access", [a.value for a in BerlinAccess]) \
        if "access" in t.names() else BerlinAccess.ALL_ACCOUNTS.value
    api = api_base.rstrip("/")
    return BerlinGroupOptions(
        consents_url=t.url("consents_url", base=api + "/") if "consents_url" in t.names()
        else api + "/v1/consents",
        sca_approach=ScaApproach(approach),
        access=BerlinAccess(access),
        status_poll_attempts=t.integer("status_poll_attempts", default=5, minimum=1,
                                       maximum=30),
        status_poll_interval=t.integer("status_poll_interval_ms", default=500, minimum=0,
                                       maximum=5000) / 1000,
        signing_certificate_file=certificate,
        signing_key_file=key_file,
        signing_key_pem_env=key_env,
    )


def berlin_keys() -> frozenset[str]:
    """The keys ``[berlin_group]`` may hold."""
    return _KEYS
