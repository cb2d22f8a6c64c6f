"""Server-rendered login, consent and error pages.

Plain HTML forms with labels and no script: a screen reader, a headless browser and an
``httpx`` client can all drive them. Every interpolated value is escaped. The pages
refuse to be framed (clickjacking on a consent button is a classic) and are not cached.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from html import escape

from starlette.responses import HTMLResponse

from aggregator.sandbox.config import TEST_USERS

_SCOPE_TEXT: Mapping[str, str] = {
    "openid": "Confirm who you are",
    "offline_access": "Keep access while you are away",
    "accounts": "See your accounts, their details and balances",
    "transactions": "See your transactions",
}

_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem}"
    "label{display:block;margin-top:1rem}input{font-size:1rem;padding:.4rem;width:100%}"
    "button{font-size:1rem;margin:1rem .5rem 0 0;padding:.5rem 1rem}"
    "[role=alert]{color:#a00;font-weight:bold}"
)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    html = (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)} - Sandbox Bank</title>\n<style>{_STYLE}</style>\n"
        f"</head>\n<body>\n<main>\n<h1>{escape(title)}</h1>\n{body}\n</main>\n</body>\n</html>\n"
    )
    return HTMLResponse(html, status_code=status, headers=_HEADERS)


def login_page(
    action: str, interaction_id: str, client_id: str, error: str | None = None
) -> HTMLResponse:
    alert = f'<p role="alert" id="login-error">{escape(error)}</p>\n' if error else ""
    described = ' aria-describedby="login-error"' if error else ""
    users = "".join(
        f"<li><code>{escape(name)}</code> / <code>{escape(password)}</code></li>"
        for name, password in TEST_USERS.items()
    )
    body = (
        f"<p>Sign in to let <strong>{escape(client_id)}</strong> see your accounts.</p>\n"
        f"{alert}"
        f'<form method="post" action="{escape(action)}">\n'
        f'<input type="hidden" name="interaction" value="{escape(interaction_id)}">\n'
        '<label for="username">Username</label>\n'
        '<input id="username" name="username" type="text" autocomplete="username" '
        f"required autofocus{described}>\n"
        '<label for="password">Password</label>\n'
        '<input id="password" name="password" type="password" '
        'autocomplete="current-password" required>\n'
        '<button type="submit">Sign in</button>\n</form>\n'
        f"<aside><h2>Sandbox test users</h2><ul>{users}</ul></aside>"
    )
    return _page("Sign in", body, 400 if error else 200)


def consent_page(
    action: str, interaction_id: str, client_id: str, user: str, scopes: Iterable[str]
) -> HTMLResponse:
    items = "".join(
        f"<li>{escape(_SCOPE_TEXT.get(scope, scope))} (<code>{escape(scope)}</code>)</li>"
        for scope in scopes
    )
    body = (
        f"<p>Signed in as <strong>{escape(user)}</strong>.</p>\n"
        f"<p><strong>{escape(client_id)}</strong> asks to:</p>\n<ul>{items}</ul>\n"
        f'<form method="post" action="{escape(action)}">\n'
        f'<input type="hidden" name="interaction" value="{escape(interaction_id)}">\n'
        '<button type="submit" name="decision" value="approve">Allow</button>\n'
        '<button type="submit" name="decision" value="deny">Deny</button>\n</form>'
    )
    return _page("Allow access?", body)


def error_page(title: str, message: str, status: int = 400) -> HTMLResponse:
    return _page(title, f'<p role="alert">{escape(message)}</p>', status)
