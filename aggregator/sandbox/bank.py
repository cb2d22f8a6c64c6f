"""The sandbox bank: one object owning the state, the Starlette app and its servers."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

from joserfc.jwk import ECKey
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route

from aggregator.http.serving import base_url as base_url_of
from aggregator.sandbox.aisp import AISP_PREFIX, AccountViews
from aggregator.sandbox.authorization_server import SandboxAuthorizationServer
from aggregator.sandbox.authorize import AuthorizeViews, Interactions
from aggregator.sandbox.berlin import BerlinConsents
from aggregator.sandbox.berlin_sca import ConsentScopes, berlin_routes
from aggregator.sandbox.config import TEST_USERS, Faults, SandboxConfig
from aggregator.sandbox.discovery import (
    AUTHORIZE_PATH,
    CONSENT_PATH,
    JWKS_PATH,
    LOGIN_PATH,
    PAR_PATH,
    REGISTER_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
)
from aggregator.sandbox.endpoints import AdminViews, OAuthViews
from aggregator.sandbox.faults import FaultGate, FaultInjector
from aggregator.sandbox.ledger import Ledger
from aggregator.sandbox.middleware import FapiInteractionId, IssuerContext, LoopbackOnly
from aggregator.sandbox.models import ClientModel
from aggregator.sandbox.serving import bind_loopback, serve_on
from aggregator.sandbox.store import SandboxClock, TokenStore

THREAD_START_TIMEOUT = 15.0


class SandboxBank:
    """A self-contained OAuth2 + OBIE bank for tests, benchmarks and local development.

    Example::

        bank = SandboxBank(SandboxConfig(require_par=True))
        async with bank.serve() as base_url:      # issuer == base_url
            ...
        bank.faults = Faults(error_rate=0.1, seed=3)
        bank.advance_day()

    State lives in memory and dies with the object. The methods are thread-safe, so
    a test may call :meth:`advance_day` while :meth:`serve_in_thread` serves.
    """

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.clock = SandboxClock()
        self.store = TokenStore(self.clock, self.config.refresh_token_ttl)
        self.ledger = Ledger(TEST_USERS, self.config.today or datetime.now(UTC).date())
        self._injector = FaultInjector()
        self._bound_issuer: str | None = None
        signing_key = ECKey.generate_key("P-256", {"alg": "ES256", "use": "sig"}, auto_kid=True)
        self.signing_key = signing_key
        #: Berlin Group NextGenPSD2 consents (``/xs2a/...``; aggregator.sandbox.berlin),
        #: served by every sandbox bank: the ``sandbox-berlin`` profile links to them.
        self.berlin = BerlinConsents()
        self.server = self._create_server(signing_key)
        self.server.scope_hooks.append(ConsentScopes(self.berlin, self.ledger))
        self.asgi_app = self._create_app(signing_key)

    def _create_server(self, signing_key: ECKey) -> SandboxAuthorizationServer:
        # A mode of the sandbox (aggregator/sandbox/obie.py) extends the server here.
        return SandboxAuthorizationServer(
            self.config,
            [ClientModel(client) for client in self.config.clients],
            self.store,
            self.clock,
            signing_key,
        )

    @property
    def issuer(self) -> str | None:
        """The configured issuer, else the base URL being served, else None."""
        return self.config.issuer or self._bound_issuer

    @property
    def faults(self) -> Faults:
        return self._injector.faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._injector.faults = faults

    def advance_day(self) -> None:
        """Book pending transactions under new ids and add the next day's; see ledger."""
        self.ledger.advance_day()

    def advance_clock(self, seconds: float) -> None:
        """Age codes, tokens and pushed requests by ``seconds`` without sleeping."""
        self.clock.advance(seconds)

    @contextlib.asynccontextmanager
    async def serve(
        self, host: str = "127.0.0.1", port: int = 0, *, own_logging: bool = False
    ) -> AsyncIterator[str]:
        """Serve in the running event loop; yields the base URL, which is the issuer."""
        if self._bound_issuer is not None:
            raise RuntimeError("this sandbox bank is already being served")
        sock = bind_loopback(host, port)
        self._bound_issuer = base_url_of(sock)
        try:
            async with serve_on(self.asgi_app, sock, own_logging=own_logging):
                yield self._bound_issuer
        finally:
            self._bound_issuer = None

    @contextlib.contextmanager
    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Like :meth:`serve`, from synchronous code: the server runs in its own thread."""
        ready = threading.Event()
        state: dict[str, object] = {}

        async def main() -> None:
            stop = asyncio.Event()
            state["stop"] = (asyncio.get_running_loop(), stop)
            async with self.serve(host, port) as base_url:
                state["base_url"] = base_url
                ready.set()
                await stop.wait()

        def run() -> None:
            try:
                asyncio.run(main())
            except BaseException as exc:  # reported to the caller's thread below
                state["error"] = exc
            finally:
                ready.set()

        thread = threading.Thread(target=run, name="sandbox-bank", daemon=True)
        thread.start()
        if not ready.wait(THREAD_START_TIMEOUT) or "base_url" not in state:
            self._stop_thread(state, thread)
            error = state.get("error")
            if isinstance(error, BaseException):
                raise error
            raise RuntimeError("sandbox bank thread did not start")
        try:
            yield str(state["base_url"])
        finally:
            self._stop_thread(state, thread)

    @staticmethod
    def _stop_thread(state: dict[str, object], thread: threading.Thread) -> None:
        stop = state.get("stop")
        if isinstance(stop, tuple):
            loop, event = stop
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(event.set)
        thread.join(THREAD_START_TIMEOUT)

    def _create_app(self, signing_key: ECKey) -> Starlette:
        return Starlette(
            routes=self._routes(signing_key),
            middleware=[Middleware(IssuerContext, issuer=lambda: self.issuer)],
        )

    def _authorize_views(self, interactions: Interactions) -> AuthorizeViews:
        return AuthorizeViews(self.server, interactions, lambda: self._injector.faults)

    def _account_views(self) -> AccountViews:
        return AccountViews(self.store, self.ledger, self.config.page_size)

    def _routes(self, signing_key: ECKey) -> list[BaseRoute]:
        """The bank's routes; a mode of the sandbox puts its own in front of them."""
        oauth = OAuthViews(self.server, signing_key)
        interactions = Interactions(self.clock, self.config.interaction_ttl)
        authorize = self._authorize_views(interactions)
        accounts = self._account_views()
        admin = AdminViews(self._injector, self.advance_day, self.advance_clock)
        token_faults = Middleware(FaultGate, injector=self._injector, flavour="token")
        obie_faults = Middleware(FaultGate, injector=self._injector, flavour="obie")
        routes: list[BaseRoute] = [
            Route("/.well-known/oauth-authorization-server", oauth.metadata, methods=["GET"]),
            Route("/.well-known/openid-configuration", oauth.metadata, methods=["GET"]),
            Route(JWKS_PATH, oauth.jwks, methods=["GET"]),
            Route(AUTHORIZE_PATH, authorize.authorize, methods=["GET"]),
            Route(LOGIN_PATH, authorize.login, methods=["POST"]),
            Route(CONSENT_PATH, authorize.consent, methods=["POST"]),
            Route(TOKEN_PATH, oauth.token, methods=["POST"], middleware=[token_faults]),
            Route(PAR_PATH, oauth.pushed_authorization, methods=["POST"]),
            Route(REVOKE_PATH, oauth.revoke, methods=["POST"]),
            # RFC 7591/7592, open registration: loopback peers only, like /_sandbox.
            Route(REGISTER_PATH, oauth.register, methods=["POST"],
                  middleware=[Middleware(LoopbackOnly)]),
            Route(REGISTER_PATH + "/{client_id}", oauth.configure,
                  methods=["GET", "PUT", "DELETE"], middleware=[Middleware(LoopbackOnly)]),
            Mount(
                AISP_PREFIX,
                routes=accounts.routes(),
                middleware=[Middleware(FapiInteractionId), obie_faults],
            ),
            # Before /_sandbox: the Berlin Group interface adds /_sandbox/xs2a.
            *berlin_routes(self.berlin, self.ledger, self.store, list(self.server.clients.values()),
                           self.config.page_size),
            Mount("/_sandbox", routes=admin.routes(), middleware=[Middleware(LoopbackOnly)]),
        ]
        return routes
