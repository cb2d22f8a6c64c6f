"""The two-step consent's page: the accounts the bank listed, as checkboxes.

Names and masked identifiers only (the full IBANs stay sealed in the session row);
every value escaped before substitution, as :mod:`aggregator.link.pages` does.
"""

from __future__ import annotations

from html import escape

from starlette.responses import HTMLResponse

from aggregator.link.pages import _page, _template
from aggregator.link.picking import AccountChoice


def accounts_page(choice: AccountChoice, *, action: str, request_id: str | None
                  ) -> HTMLResponse:
    """One checkbox per account, all checked: sharing everything is the common choice."""
    heading = "Choose your accounts"
    options = "\n".join(
        f'<li><label><input type="checkbox" name="account" value="{i}" checked> '
        f"{escape(a.name)} <span class=\"country\">{escape(a.mask)}</span></label></li>"
        for i, a in enumerate(choice.accounts)
    )
    if not options:
        options = "<li>Your bank listed no accounts you can share.</li>"
    body = _template("accounts.html").substitute(
        heading=escape(heading), action=escape(action), state=escape(choice.state),
        options=options)
    return _page(heading, body, request_id=request_id)
