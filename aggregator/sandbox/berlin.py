"""The sandbox bank's Berlin Group NextGenPSD2 consents (XS2A Implementation Guidelines v1.3.x).

An account-information consent is a resource of its own, created by the TPP *before*
the user is sent to the bank ("Establish Account Information Consent"), authorised by
the user through strong customer authentication, and named by ``Consent-ID`` on every
account call afterwards. This module keeps the consents, their life cycle and what each
one lets a TPP read; :mod:`aggregator.sandbox.berlin_api` serves them over HTTP.

Statuses (the guidelines' ``consentStatus``): ``received`` until the user authorises,
then ``valid``; ``rejected`` when the user refuses; ``revokedByPsu`` when the user
withdraws it at the bank; ``terminatedByTpp`` after ``DELETE``; ``expired`` once the
day passes ``validUntil``.

``frequencyPerDay`` bounds the reads *without the user present* (a request without
``PSU-IP-Address``; PSD2 RTS Art. 36(5)(b)): counted per consent, resource and account
per calendar day of the bank's ledger, so :meth:`SandboxBank.advance_day` resets it.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from aggregator.sandbox.ledger import Account

#: The longest consent the sandbox grants; a longer ``validUntil`` is shortened to it, as
#: the guidelines allow an ASPSP to do (it reports the value it keeps).
MAX_VALID_DAYS = 180

RECEIVED, VALID, REJECTED = "received", "valid", "rejected"
REVOKED_BY_PSU, TERMINATED_BY_TPP, EXPIRED = "revokedByPsu", "terminatedByTpp", "expired"

#: What an account call reads, for ``access`` checks and the ``frequencyPerDay`` counter.
LIST, BALANCES, TRANSACTIONS = "accounts", "balances", "transactions"

OAUTH, REDIRECT = "OAUTH", "REDIRECT"


class AccessError(ValueError):
    """A consent request body the guidelines do not allow; the message names the field."""


def iban_of(account: Account) -> str:
    """A German IBAN for a sandbox account (ISO 13616: check digits by ISO 7064 mod 97-10).

    The bank code is ``10`` + the account's sort code, the account number its eight
    digits padded to ten, so every sandbox account has one stable, valid IBAN.
    """
    digits = account.identification
    bban = f"10{digits[:6]}00{digits[6:14]}"
    rearranged = bban + "1314" + "00"  # "DE" as 13 14, then the "00" placeholder
    check = 98 - int(rearranged) % 97
    return f"DE{check:02d}{bban}"


@dataclass(frozen=True)
class Access:
    """The ``access`` object of a consent request, as the sandbox understands it.

    ``all_psd2``: every account with balances and transactions; ``available``: the
    account list only (``availableAccounts``, optionally ``WithBalance``); otherwise the
    detailed form, IBANs per resource. A detailed request with every list empty is the
    "bank-offered consent": the user chooses at the bank (the sandbox grants all).
    """

    all_psd2: bool = False
    available: bool = False
    available_with_balance: bool = False
    accounts: frozenset[str] = frozenset()
    balances: frozenset[str] = frozenset()
    transactions: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: object) -> Access:
        if not isinstance(raw, dict) or not raw:
            raise AccessError("access must be a non-empty object")
        all_psd2 = raw.get("allPsd2")
        available = raw.get("availableAccounts")
        with_balance = raw.get("availableAccountsWithBalance")
        for name, value in (("allPsd2", all_psd2), ("availableAccounts", available),
                            ("availableAccountsWithBalance", with_balance)):
            if value not in (None, "allAccounts", "allAccountsWithOwnerName"):
                raise AccessError(f"access.{name} must be allAccounts")
        lists = {name: _ibans(raw.get(name), name) for name in (LIST, BALANCES, TRANSACTIONS)}
        if all_psd2 is not None or available is not None or with_balance is not None:
            if any(lists.values()):
                raise AccessError("access: allPsd2/availableAccounts exclude account lists")
            return cls(all_psd2=all_psd2 is not None,
                       available=available is not None or with_balance is not None,
                       available_with_balance=with_balance is not None)
        if not any(name in raw for name in (LIST, BALANCES, TRANSACTIONS)):
            raise AccessError("access: name accounts, balances or transactions")
        return cls(accounts=lists[LIST], balances=lists[BALANCES],
                   transactions=lists[TRANSACTIONS])

    @property
    def bank_offered(self) -> bool:
        return not (self.all_psd2 or self.available or self.accounts or self.balances
                    or self.transactions)

    def as_json(self) -> dict[str, Any]:
        if self.all_psd2:
            return {"allPsd2": "allAccounts"}
        if self.available:
            key = "availableAccountsWithBalance" if self.available_with_balance \
                else "availableAccounts"
            return {key: "allAccounts"}
        return {name: [{"iban": iban} for iban in sorted(values)] for name, values in (
            (LIST, self.accounts), (BALANCES, self.balances), (TRANSACTIONS, self.transactions))}


def _ibans(raw: object, name: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list):
        raise AccessError(f"access.{name} must be an array of account references")
    found = set()
    for item in raw:
        iban = item.get("iban") if isinstance(item, dict) else None
        if not isinstance(iban, str) or not iban:
            raise AccessError(f"access.{name}: each reference needs an iban")
        found.add("".join(iban.split()).upper())
    return frozenset(found)


@dataclass
class Consent:
    """One account-information consent and what the bank knows about its use."""

    consent_id: str
    access: Access
    recurring: bool
    valid_until: date
    frequency_per_day: int
    approach: str
    status: str = RECEIVED
    redirect_uri: str | None = None
    nok_redirect_uri: str | None = None
    #: The unguessable id of the redirect SCA page (``/xs2a/sca/{id}``).
    authorisation_id: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    user: str | None = None
    #: IBANs the user's authorisation covers, resolved against the ledger.
    granted: dict[str, frozenset[str]] = field(default_factory=dict)
    usage: dict[tuple[str, str], int] = field(default_factory=dict)
    usage_day: date | None = None
    #: Status reads still answered ``received`` after authorisation (a slow bank).
    lag: int = 0

    def covers(self, resource: str, iban: str) -> bool:
        """Whether the authorised consent lets the TPP read ``resource`` of ``iban``."""
        return iban in self.granted.get(resource, frozenset())


class BerlinConsents:
    """Every consent of one sandbox bank, thread-safe; ``status_lag`` delays ``valid``;
    ``require_signatures`` refuses requests not sealed with a QSealC.

    ``status_lag = N`` makes the first N status reads after an authorisation still say
    ``received``, as a bank whose SCA back end is slower than its redirect does.
    """

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._items: dict[str, Consent] = {}
        self.status_lag = 0
        #: Refuse any XS2A request not sealed with a QSealC (guidelines §12);
        #: :mod:`aggregator.sandbox.berlin_seal` checks it.
        self.require_signatures = False

    def create(self, access: Access, *, recurring: bool, valid_until: date,
               frequency_per_day: int, approach: str, today: date,
               redirect_uri: str | None = None, nok_redirect_uri: str | None = None,
               ) -> Consent:
        consent = Consent(
            consent_id=secrets.token_hex(16), access=access, recurring=recurring,
            valid_until=min(valid_until, today + timedelta(days=MAX_VALID_DAYS)),
            frequency_per_day=frequency_per_day, approach=approach,
            redirect_uri=redirect_uri, nok_redirect_uri=nok_redirect_uri,
        )
        with self.lock:
            self._items[consent.consent_id] = consent
        return consent

    def get(self, consent_id: str, today: date) -> Consent | None:
        with self.lock:
            consent = self._items.get(consent_id)
            if consent is not None and consent.status == VALID and today > consent.valid_until:
                consent.status = EXPIRED
            return consent

    def by_authorisation(self, authorisation_id: str) -> Consent | None:
        with self.lock:
            return next((c for c in self._items.values()
                         if secrets.compare_digest(c.authorisation_id, authorisation_id)), None)

    def status_of(self, consent: Consent) -> str:
        """The status a status read reports; counts down the configured lag."""
        with self.lock:
            if consent.status == VALID and consent.lag > 0:
                consent.lag -= 1
                return RECEIVED
            return consent.status

    def authorise(self, consent: Consent, user: str, accounts: Iterable[Account]) -> None:
        """The user passed SCA and approved: bind the consent to them and its accounts."""
        with self.lock:
            if consent.status != RECEIVED:
                return
            ibans = frozenset(iban_of(a) for a in accounts)
            access = consent.access
            if access.all_psd2 or access.bank_offered:
                granted = {LIST: ibans, BALANCES: ibans, TRANSACTIONS: ibans}
            elif access.available:
                granted = {LIST: ibans,
                           BALANCES: ibans if access.available_with_balance else frozenset()}
            else:
                wanted = access.accounts | access.balances | access.transactions
                granted = {LIST: ibans & wanted,
                           BALANCES: ibans & (access.balances | access.transactions),
                           TRANSACTIONS: ibans & access.transactions}
            consent.user, consent.granted = user, granted
            consent.status, consent.lag = VALID, self.status_lag

    def reject(self, consent: Consent) -> None:
        with self.lock:
            if consent.status == RECEIVED:
                consent.status = REJECTED

    def revoke_by_psu(self, consent_id: str) -> None:
        """The user withdraws the consent at the bank (tests call this directly)."""
        with self.lock:
            self._items[consent_id].status = REVOKED_BY_PSU

    def terminate(self, consent: Consent) -> None:
        with self.lock:
            consent.status = TERMINATED_BY_TPP

    def count_unattended(self, consent: Consent, resource: str, iban: str | None,
                         today: date) -> bool:
        """Count one read without the user; False when it exceeds ``frequencyPerDay``."""
        with self.lock:
            if consent.usage_day != today:
                consent.usage, consent.usage_day = {}, today
            key = (resource, iban or "")
            used = consent.usage.get(key, 0)
            if used >= consent.frequency_per_day:
                return False
            consent.usage[key] = used + 1
            return True

    def all(self) -> Mapping[str, Consent]:
        with self.lock:
            return dict(self._items)
