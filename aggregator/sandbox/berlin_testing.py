"""Walking the sandbox's Berlin Group SCA pages without a browser (tests and the demo).

:func:`complete_sca` follows wherever the gateway sent the user: the redirect approach's
``/xs2a/sca/{id}`` page, or (OAuth2 approach) the authorization endpoint, which
:func:`~aggregator.sandbox.testing.complete_login` already knows. Either way it signs
in, approves or refuses, and returns the URL the bank sends the browser back to.
"""

from __future__ import annotations

import re

import httpx

from aggregator.sandbox.berlin_api import SCA_PATH
from aggregator.sandbox.config import TEST_USERS
from aggregator.sandbox.testing import complete_login, interaction_id

_ACTION = re.compile(r'<form method="post" action="([^"]+)"')


async def complete_sca(http: httpx.AsyncClient, url: str, *, user: str = "alice",
                       decision: str = "approve") -> str:
    """Sign in and decide at the bank; returns the bank's redirect ``Location``."""
    if SCA_PATH + "/" not in httpx.URL(url).path:
        return await complete_login(http, url, user=user, decision=decision)
    page = await http.get(url, follow_redirects=False)
    if page.status_code != 200:
        raise AssertionError(f"SCA page answered {page.status_code}")
    login = await http.post(
        page.url.join(_action(page.text)),
        data={"interaction": interaction_id(page.text), "username": user,
              "password": TEST_USERS[user]},
        follow_redirects=False,
    )
    if login.status_code != 200 or 'value="approve"' not in login.text:
        raise AssertionError(f"SCA sign-in answered {login.status_code}")
    answer = await http.post(
        login.url.join(_action(login.text)),
        data={"interaction": interaction_id(login.text), "decision": decision},
        follow_redirects=False,
    )
    if answer.status_code != 302:
        raise AssertionError(f"SCA decision answered {answer.status_code}")
    return answer.headers["location"]


def _action(page: str) -> str:
    match = _ACTION.search(page)
    if match is None:
        raise AssertionError("the SCA page has no form")
    return match.group(1)
