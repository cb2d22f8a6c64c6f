"""The two-step consent's page: the accounts the bank listed, as checkboxes.

Names and masked identifiers only (the full IBANs stay sealed in the session row);
rendered with autoescaping on, as :mod:`aggregator.link.pages` does.
"""

from __future__ import annotations

from starlette.responses import HTMLResponse

from aggregator.link.pages import _page
from aggregator.link.picking import AccountChoice
from aggregator.link.rendering import DEFAULT_LOCALE, gettext


def accounts_page(choice: AccountChoice, *, action: str, request_id: str | None,
                  locale: str = DEFAULT_LOCALE) -> HTMLResponse:
    """One checkbox per account, all checked: sharing everything is the common choice."""
    heading = gettext(locale, "Choose your accounts")
    return _page("accounts.html", heading, request_id=request_id, locale=locale,
                 heading=heading, action=action, state=choice.state,
                 accounts=choice.accounts)
