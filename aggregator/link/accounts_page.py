"""The two-step consent's page: the accounts the bank listed, as checkboxes.

Names and masked identifiers only (the full IBANs stay sealed in the session row);
rendered through the Link pages' Jinja2 environment, so every value is escaped there,
and in the person's language like the other Link pages.
"""

from __future__ import annotations

from starlette.responses import HTMLResponse

from aggregator.link.i18n import DEFAULT
from aggregator.link.outcome import AccountChoice
from aggregator.link.pages import _page, _t


def accounts_page(choice: AccountChoice, *, action: str, request_id: str | None,
                  locale: str = DEFAULT) -> HTMLResponse:
    """One checkbox per account, all checked: sharing everything is the common choice."""
    heading = _t(locale, "Choose your accounts")
    return _page("accounts.html", heading, request_id=request_id, locale=locale,
                 heading=heading, action=action, state=choice.state,
                 accounts=list(choice.accounts))
