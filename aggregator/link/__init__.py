"""The hosted Link flow: an app's link session, the bank picker, the OAuth callback.

::

    app backend ── POST /v1/link/sessions ──► link token + URL        (sessions.py)
    browser ─────── GET /link/{token} ──────► bank picker            (routes.py, pages.py)
            ─────── POST /link/{token} ─────► 303 to the bank        (flow.py: authorize)
    bank ────────── GET /link/callback ─────► connection, sync, 303  (flow.py: complete,
                                               to the app's redirect   grants.py)

Modules stay importable without the HTTP layer except :mod:`~aggregator.link.routes`
and :mod:`~aggregator.link.wiring`, which plug the flow into whatever satisfies
:class:`~aggregator.link.needs.LinkNeeds`; the composer (:mod:`aggregator.http.app`)
includes the routes, and nothing here imports it.
"""
