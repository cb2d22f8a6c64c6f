"""The profile keys of each consent standard: ``standard = "…"`` and its own table.

Parsed inside :func:`connectors.load_profiles`, so a bad value stops start-up with the
file and the key at fault. A table for a standard the profile does not name is refused
(it would be silently ignored otherwise). ``[obie]``::

    standard = "obie"

    [obie]
    # OBIE Account and Transaction API v3.1 §"Permission Codes"; default: the read set
    # the gateway maps (accounts, balances, transactions).
    permissions = ["ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail",
                   "ReadTransactionsCredits", "ReadTransactionsDebits"]
    acr_values = ["urn:openbanking:psd2:sca"]      # OBIE Security Profile §5.2.2
    response_type = "code"                          # or "code id_token" (FAPI 1 hybrid)
    transaction_history_days = 730                  # TransactionFromDateTime; omit: none
    consents_url = "/open-banking/v3.1/aisp/account-access-consents"   # default: api base
    financial_id = "0015800001041REAAY"             # x-fapi-financial-id, older banks only
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from connectors._schema import Table
from connectors.consents.base import Standard
from connectors.consents.berlin_options import berlin_keys, parse_berlin_options

__all__ = ["DEFAULT_OBIE_PERMISSIONS", "OBIE_PERMISSIONS", "ObieOptions", "standard_options"]

#: OBIE v3.1 Account and Transaction API, account-access-consents "Permissions" (read).
OBIE_PERMISSIONS: Final = frozenset({
    "ReadAccountsBasic", "ReadAccountsDetail", "ReadBalances", "ReadBeneficiariesBasic",
    "ReadBeneficiariesDetail", "ReadDirectDebits", "ReadOffers", "ReadPAN", "ReadParty",
    "ReadPartyPSU", "ReadProducts", "ReadScheduledPaymentsBasic",
    "ReadScheduledPaymentsDetail", "ReadStandingOrdersBasic", "ReadStandingOrdersDetail",
    "ReadStatementsBasic", "ReadStatementsDetail", "ReadTransactionsBasic",
    "ReadTransactionsCredits", "ReadTransactionsDebits", "ReadTransactionsDetail",
})
#: What the gateway reads (connectors/dialects/obie.py): account identifiers and holder
#: names need *Detail; credits and debits together are every transaction.
DEFAULT_OBIE_PERMISSIONS: Final = (
    "ReadAccountsDetail", "ReadBalances", "ReadTransactionsDetail",
    "ReadTransactionsCredits", "ReadTransactionsDebits",
)
_RESPONSE_TYPES: Final = ("code", "code id_token")


@dataclass(frozen=True)
class ObieOptions:
    """A UK Open Banking bank's consent settings (the profile's ``[obie]`` table)."""

    consents_url: str
    permissions: tuple[str, ...] = DEFAULT_OBIE_PERMISSIONS
    acr_values: tuple[str, ...] = ("urn:openbanking:psd2:sca",)
    response_type: str = "code"
    transaction_history_days: int | None = None
    financial_id: str | None = None

    @property
    def hybrid(self) -> bool:
        """FAPI 1 Advanced §5.2.2: ``code id_token``, the ID token a detached signature."""
        return self.response_type == "code id_token"


_OBIE_KEYS = frozenset({"permissions", "acr_values", "response_type",
                        "transaction_history_days", "consents_url", "financial_id"})


def standard_options(t: Table, standard: Standard, api_base: str, *,
                     base: Path | None = None) -> Mapping[str, Any]:
    """The :class:`~connectors.BankProfile` fields of the profile's standard.

    Each standard adds its table here (``[obie]``, ``[berlin_group]``).
    """
    for other in Standard:
        if other is not standard and other.value in t.names():
            raise t.error(other.value, f"only read with standard = {other.value!r}, "
                                       f"not {standard.value!r}")
    if standard is Standard.OBIE:
        return {"obie": _obie(t.table("obie", _OBIE_KEYS), api_base)}
    if standard is Standard.BERLIN_GROUP:
        return {"berlin_group": parse_berlin_options(
            t.table("berlin_group", berlin_keys()), api_base, base=base or Path("."))}
    return {}


def _obie(t: Table, api_base: str) -> ObieOptions:
    permissions = _strings(t, "permissions", DEFAULT_OBIE_PERMISSIONS)
    unknown = sorted(set(permissions) - OBIE_PERMISSIONS)
    if unknown:
        raise t.error("permissions", f"unknown OBIE permission(s) {unknown}")
    response_type = t.get("response_type", "code")
    if response_type not in _RESPONSE_TYPES:
        raise t.error("response_type", f"must be one of {list(_RESPONSE_TYPES)}")
    history = None
    if "transaction_history_days" in t.names():
        history = t.integer("transaction_history_days", default=1, minimum=1, maximum=3650)
    base = api_base.rstrip("/") + "/"
    return ObieOptions(
        consents_url=t.url("consents_url", base=base) if "consents_url" in t.names()
        else base + "account-access-consents",
        permissions=permissions,
        acr_values=_strings(t, "acr_values", ("urn:openbanking:psd2:sca",)),
        response_type=response_type,
        transaction_history_days=history,
        financial_id=t.optional_string("financial_id"),
    )


def _strings(t: Table, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = t.get(key, list(default))
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v.strip() for v in value):
        raise t.error(key, "must be a non-empty array of strings")
    if len(set(value)) != len(value):
        raise t.error(key, "lists a value twice")
    return tuple(value)
