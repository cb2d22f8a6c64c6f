"""Where a link ends for the browser: an outcome, or a choice of accounts to make first.

Shared by :mod:`~aggregator.link.flow` (the callback) and :mod:`~aggregator.link.picking`
(the two-step consent), which both answer with an :class:`Outcome`; it lives apart so
that neither imports the other at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aggregator.ids import ConnectionId
from connectors import BankMisconfigured

SUCCESS, DENIED, ERROR = "success", "denied", "error"


@dataclass(frozen=True, slots=True)
class Offered:
    """One account on the picking page: never the full IBAN, which stays sealed."""

    name: str
    mask: str


@dataclass(frozen=True, slots=True)
class AccountChoice:
    """What the picking page needs: the form's ``state`` and the accounts, by position."""

    state: str
    accounts: Sequence[Offered]

    def __repr__(self) -> str:  # the state is a bearer secret for the next step
        return f"AccountChoice(accounts={len(self.accounts)})"


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where the browser goes after the callback: the app's redirect URI, annotated."""

    redirect_to: str
    outcome: str
    connection_id: ConnectionId | None
    #: A two-step consent's account list: the callback shows it instead of redirecting.
    choice: AccountChoice | None = None
    #: Set when the bank refused our configuration: the route counts it for operators.
    misconfigured: BankMisconfigured | None = None
    misconfigured_bank: str | None = None


def app_redirect(redirect_uri: str, connection_id: str | None, outcome: str) -> str:
    """``redirect_uri`` with exactly ``connection_id`` (when known) and ``outcome`` added."""
    parts = urlsplit(redirect_uri)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("connection_id", "outcome")]
    if connection_id is not None:
        query.append(("connection_id", connection_id))
    query.append(("outcome", outcome))
    return urlunsplit(parts._replace(query=urlencode(query)))
