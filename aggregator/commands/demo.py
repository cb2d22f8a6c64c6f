"""``aggregator demo [--headless]``: the whole gateway on one machine, with no configuration.

It prepares the embedded default (each region's local KEK under ``var/keys/``, each
region's SQLite store under ``var/`` migrated), starts the sandbox bank and the gateway
on loopback (ports 8600 and 8000, or free ones when those are taken), registers a demo
application whose redirect URI is the gateway's own ``/demo/done`` page, creates a user
homed in ``eu``, and prints the Link URL to open in a browser. Ctrl-C stops it.

``--bank`` picks the sandbox mode to link (``sandbox-eu``, the default: plain OAuth2 +
PKCE + PAR; ``sandbox-fapi2``: FAPI 2.0 with DPoP-bound tokens, PAR and
``private_key_jwt``). ``--headless`` walks the flow itself, as a person would (the Link
page, the bank's sign-in and consent forms, every redirect), then prints what was
linked, which region's database holds it, and the sealed refresh token as stored next
to proof that it opens to the token the bank issued — proof by SHA-256 prefix; no
token is ever printed (at a DPoP bank, also the sealed DPoP key and the bank's binding
of the tokens to it). It stops its servers and exits 0 within :data:`HEADLESS_TIMEOUT` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from aggregator.applications import create_application
from aggregator.bank_profiles import gateway_profiles
from aggregator.custody import open_custody
from aggregator.http import Services
from aggregator.http.app import create_app
from aggregator.http.serving import base_url, bind, serving
from aggregator.keyring import envelope_for
from aggregator.link.pages import message_page, success_page
from aggregator.link.walk import Walk, link_as_person
from aggregator.link.wiring import install
from aggregator.models import Account, Connection, Credential, Transaction
from aggregator.pepper import load_pepper
from aggregator.sandbox import (
    DEV_CLIENT_ID,
    DEV_CLIENT_SECRET,
    TEST_USERS,
    SandboxBank,
    SandboxClient,
    SandboxConfig,
)
from aggregator.sandbox.fapi2 import Fapi2SandboxBank
from aggregator.sandbox.modes import MODES
from aggregator.settings import Settings, load_settings
from aggregator.store import RegionRouter, upgrade
from aggregator.sync import BankDirectory
from aggregator.sync.tokens import open_dpop_key
from connectors import egress_client
from vault import WrappedKey, data_key_id

BANK_PORT, GATEWAY_PORT = 8600, 8000
HEADLESS_TIMEOUT = 90.0
DEMO_REGION = "eu"
SANDBOX_BANKS = ("sandbox-eu", "sandbox-us")
DONE_PATH = "/demo/done"

Out = Callable[[str], None]


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo", help="run the gateway and the sandbox bank locally and link an account",
        description="Prepare the embedded default (SQLite per region under ./var, local "
        "keyring), start the sandbox bank and the gateway on 127.0.0.1, and print a Link "
        "URL. With --headless, walk the Link flow as a person would and show the result.",
    )
    demo.add_argument("--headless", action="store_true",
                      help="link alice's sandbox accounts without a browser, show, exit")
    demo.add_argument("--bank", choices=sorted(DEMO_BANKS), default="sandbox-eu",
                      help="the sandbox bank (mode) to link (default %(default)s)")
    demo.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(Path(args.config) if args.config else None)
    out: Out = lambda line: print(line, flush=True)  # noqa: E731
    bank_id = getattr(args, "bank", "sandbox-eu")
    if args.headless:
        try:
            return asyncio.run(asyncio.wait_for(_headless(settings, out, bank_id),
                                                HEADLESS_TIMEOUT))
        except TimeoutError:
            print(f"aggregator demo: gave up after {HEADLESS_TIMEOUT:.0f} s", file=sys.stderr)
            return 1
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how one stops it
        asyncio.run(_interactive(settings, out, bank_id))
    return 0


# -- the environment ---------------------------------------------------------------


@dataclass
class Demo:
    """Everything running for the demo, and what was created in it."""

    settings: Settings
    bank: SandboxBank
    bank_url: str
    gateway_url: str
    services: Services
    api: httpx.AsyncClient
    app_id: str
    api_key: str = field(repr=False)
    issued_refresh_digests: list[str] = field(default_factory=list)
    bank_id: str = "sandbox-eu"


CALLBACK_URIS = ("http://127.0.0.1/link/callback",)


def _gateway_client() -> SandboxClient:
    # The sandbox's published development client, with the gateway's one callback path.
    return SandboxClient(client_id=DEV_CLIENT_ID, client_secret=DEV_CLIENT_SECRET,
                         redirect_uris=CALLBACK_URIS)


def _plain_bank(data_dir: Path) -> tuple[SandboxBank, tuple[str, ...]]:
    return SandboxBank(SandboxConfig(clients=[_gateway_client()])), SANDBOX_BANKS


def _mode(bank_id: str) -> Callable[[Path], tuple[SandboxBank, tuple[str, ...]]]:
    # A private_key_jwt client (FAPI 2.0, UK Open Banking) registers the public half of
    # the key its profile's dev_private_key names, generated in the data directory the
    # gateway reads it from (aggregator/sandbox_keys.py). Berlin Group: OAuth2 SCA.
    def build(data_dir: Path) -> tuple[SandboxBank, tuple[str, ...]]:
        return MODES[bank_id](CALLBACK_URIS, data_dir), (bank_id,)

    return build


#: ``--bank`` → the sandbox to run and the profiles pointed at it.
DEMO_BANKS: dict[str, Callable[[Path], tuple[SandboxBank, tuple[str, ...]]]] = {
    "sandbox-berlin": _mode("sandbox-berlin"),
    "sandbox-eu": _plain_bank,
    "sandbox-fapi2": _mode("sandbox-fapi2"),
    "sandbox-obie": _mode("sandbox-obie"),
}


async def _prepare(settings: Settings, router: RegionRouter, out: Out) -> None:
    """`aggregator keys init` and `aggregator migrate`, for every region."""
    for name, region in settings.regions.items():
        provider = envelope_for(region, settings).provider
        try:
            provider.ensure_kek()
            revision = await upgrade(router.engine(name), region=name)
            await load_pepper(router, name, provider)
        finally:
            provider.close()
        out(f"  region {name}: key ready, store {_store(region.database_url)} "
            f"at revision {revision}")


def _store(url: str) -> str:
    parsed = make_url(url)
    return parsed.database or url if parsed.get_backend_name() == "sqlite" else \
        parsed.render_as_string(hide_password=True)


def _bind(port: int) -> Any:
    try:
        return bind("127.0.0.1", port)
    except OSError:  # taken: any free port will do
        return bind("127.0.0.1", 0)


@contextlib.asynccontextmanager
async def _running(settings: Settings, out: Out, bank_id: str = "sandbox-eu"
                   ) -> AsyncIterator[Demo]:
    # The demo's bank is the sandbox on 127.0.0.1: the sandbox banks' opt-in and the
    # development opt-in of the egress policy, for this process only (the rest of the
    # policy stays as configured).
    settings = replace(settings, sandbox_banks=True,
                       egress=replace(settings.egress, allow_http_loopback=True))
    async with AsyncExitStack() as stack:
        out("aggregator demo: the embedded default, on this machine only")
        router = RegionRouter(settings)
        stack.push_async_callback(router.dispose)
        await _prepare(settings, router, out)
        custody = await open_custody(router, settings)
        for keys in custody.values():
            stack.callback(keys.close)
        bank, served = DEMO_BANKS[bank_id](settings.data_dir)
        try:
            bank_url = await stack.enter_async_context(bank.serve("127.0.0.1", BANK_PORT))
        except OSError:  # taken: any free port will do
            bank_url = await stack.enter_async_context(bank.serve("127.0.0.1", 0))
        digests: list[str] = []
        http = await stack.enter_async_context(egress_client(
            settings.egress, timeout=10, event_hooks={"response": [_token_watch(digests)]},
        ))
        profiles = gateway_profiles(settings, {b: {"issuer": bank_url} for b in served})
        banks = BankDirectory(profiles, http, policy=settings.egress)
        stack.push_async_callback(banks.aclose)
        services = Services(settings, router, custody, banks)
        sock = _bind(GATEWAY_PORT)
        gateway_url = base_url(sock)
        install(services, public_url=gateway_url)
        app = create_app(settings, services=services, routes=_demo_routes())
        await stack.enter_async_context(serving(app, sock))
        app_id, key = await create_application(
            router, "Aggregator demo", [gateway_url + DONE_PATH]
        )
        api = await stack.enter_async_context(httpx.AsyncClient(
            base_url=gateway_url, timeout=30, headers={"Authorization": f"Bearer {key}"},
        ))
        out(f"  sandbox bank: {bank_url}  (test users: "
            + ", ".join(f"{u} / {p}" for u, p in TEST_USERS.items()) + ")")
        out(f"  gateway:      {gateway_url}  (API docs: {gateway_url}/openapi.json)")
        out(f"  application:  {app_id}, redirect URI {gateway_url}{DONE_PATH}")
        yield Demo(settings, bank, bank_url, gateway_url, services, api, app_id, key, digests,
                   bank_id)


def _token_watch(digests: list[str]) -> Callable[[httpx.Response], Any]:
    """Remember SHA-256 of each refresh token the bank issues: the demo's later proof."""

    async def hook(response: httpx.Response) -> None:
        if response.request.method == "POST" and response.request.url.path == "/token":
            await response.aread()
            token = response.json().get("refresh_token") if response.is_success else None
            if isinstance(token, str):
                digests.append(hashlib.sha256(token.encode()).hexdigest())

    return hook


def _demo_routes() -> list[BaseRoute]:
    async def done(request: Request) -> Response:
        query = request.query_params
        outcome, connection = query.get("outcome", "?"), query.get("connection_id")
        advice = ("This is the demo application's own page. Press Ctrl-C in the terminal "
                  "to stop the demo.")
        if outcome == "success" and connection:
            return success_page("Your bank is connected",
                                f"Connection {connection} is active.", advice=advice)
        return message_page("Your bank was not connected", f"The outcome was: {outcome}.",
                            status=200, request_id=None, advice=advice)

    return [Route(DONE_PATH, done, methods=["GET"], include_in_schema=False)]


async def _new_link(demo: Demo, out: Out) -> str:
    external = f"demo-{secrets.token_hex(4)}"
    user = await demo.api.post("/v1/users", json={"external_id": external,
                                                  "region": DEMO_REGION})
    user.raise_for_status()
    user_id = user.json()["id"]
    session = await demo.api.post("/v1/link/sessions", json={
        "user_id": user_id, "redirect_uri": demo.gateway_url + DONE_PATH,
    })
    session.raise_for_status()
    out(f"  user:         {user_id} (home region {DEMO_REGION})")
    return str(session.json()["link_url"])


# -- the two modes -----------------------------------------------------------------


async def _interactive(settings: Settings, out: Out, bank_id: str = "sandbox-eu") -> None:
    async with _running(settings, out, bank_id) as demo:
        link_url = await _new_link(demo, out)
        out(f"  API key:      {demo.api_key}  (shown once; for curl against the API)")
        out("")
        out("Open this Link URL in a browser within 10 minutes, pick the bank, and sign in "
            "as alice / alice-pass:")
        out(f"  {link_url}")
        out("Stop with Ctrl-C.")
        stop = asyncio.Event()
        with contextlib.suppress(NotImplementedError):  # not on Windows
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()


async def _headless(settings: Settings, out: Out, bank_id: str = "sandbox-eu") -> int:
    async with _running(settings, out, bank_id) as demo, \
            httpx.AsyncClient(timeout=30) as browser:
        link_url = await _new_link(demo, out)
        out(f"  Link URL:     {_short(link_url)}")
        out("")
        out("Walking the Link flow as a person would (plain HTTP, the pages' own forms):")
        user, password = "alice", TEST_USERS["alice"]
        walk = await link_as_person(browser, link_url, username=user, password=password,
                                    bank_id=demo.bank_id)
        for line in _hops(walk, demo):
            out(line)
        query = walk.landed_query
        if query.get("outcome") != "success" or "connection_id" not in query:
            out(f"linking failed: outcome {query.get('outcome', 'unknown')}")
            return 1
        await _report(demo, query["connection_id"], out)
    out("")
    out("demo finished; the bank and the gateway are stopped.")
    return 0


def _short(url: str) -> str:
    head, _, token = url.rpartition("/")
    return f"{head}/{token[:14]}…" if token.startswith("lnk_") else url


def _hops(walk: Walk, demo: Demo) -> list[str]:
    lines = []
    for method, url, status in walk.hops:
        parsed = httpx.URL(url)
        where = "gateway" if url.startswith(demo.gateway_url) else "bank   "
        path = parsed.path
        if path.startswith("/link/lnk_"):
            path = path[:20] + "…"
        shown = f"{path}?{parsed.query.decode()}" if path == DONE_PATH else path
        if parsed.query and path != DONE_PATH:
            shown += "?…"  # codes and request references stay off the screen
        lines.append(f"  {method:<4} {where} {shown:<58} {status}")
    return lines


async def _report(demo: Demo, connection_id: str, out: Out) -> None:
    accounts = (await demo.api.get(f"/v1/connections/{connection_id}/accounts")).json()
    out("")
    out(f"Linked accounts (GET /v1/connections/{connection_id}/accounts):")
    for a in accounts["data"]:
        b = a["balance"] or {}
        out(f"  {a['id']}  {a['name']:<10} {a['type']:<9} ••{(a['mask'] or '')[-4:]:<4} "
            f"balance {_money(b.get('current')):>10} {b.get('currency', '')}  "
            f"available {_money(b.get('available'))}")
    first = accounts["data"][0]
    page = (await demo.api.get(f"/v1/accounts/{first['id']}/transactions",
                               params={"limit": 5})).json()
    out(f"A few transactions of {first['name']} (GET /v1/accounts/{first['id']}/transactions):")
    for t in page["data"]:
        out(f"  {t['booked_on'] or '':<10}  {t['status']:<7} {_money(t['amount']):>10} "
            f"{t['currency']}  {t['description']}")
    await _residency(demo, connection_id, out)
    await _sealed_token(demo, connection_id, out)


def _money(text: str | None) -> str:
    """Amounts travel with four decimals; show cents when nothing finer is there."""
    if text is None:
        return "?"
    amount = Decimal(text)
    cents = amount.quantize(Decimal("0.01"))
    return f"{cents if cents == amount else amount:,}"


async def _residency(demo: Demo, connection_id: str, out: Out) -> None:
    out("")
    out("Where the data lives (each region's own database):")
    for region, settings in demo.settings.regions.items():
        async with demo.services.router.reader(region) as session:
            counts = [
                (await session.execute(select(func.count()).select_from(model)
                                       .where(model.connection_id == connection_id)))
                .scalar_one()
                for model in (Credential, Account, Transaction)
            ]
            found = await session.get(Connection, connection_id)
        held = (f"holds the connection, its credential, {counts[1]} accounts and "
                f"{counts[2]} transactions" if found else "holds none of it")
        out(f"  region {region}: {_store(settings.database_url)} {held}")


async def _sealed_token(demo: Demo, connection_id: str, out: Out) -> None:
    region = demo.services.router.region_of(connection_id)
    custody = demo.services.custody[region]
    async with demo.services.router.reader(region) as session:
        credential = (await session.execute(
            select(Credential).where(Credential.connection_id == connection_id)
        )).scalar_one()
        key = await custody.data_keys.load(session, credential.user_id)
    blob = bytes(credential.refresh_token_sealed or b"")
    opened = await custody.sealer.open_from(key, credential, "refresh_token_sealed") or ""
    digest = hashlib.sha256(opened.encode()).hexdigest()
    issued = demo.issued_refresh_digests[-1] if demo.issued_refresh_digests else ""
    out("")
    out(f"The refresh token at rest (credentials.refresh_token_sealed, row {credential.id}):")
    out(f"  {len(blob)} bytes: envelope v{blob[0]}, sealed under data key {data_key_id(blob)}")
    out(f"  hex:    {blob[:32].hex()}…")
    out(f"  base64: {base64.b64encode(blob).decode()[:64]}…")
    out(f"  opened with the user's data key: SHA-256 {digest[:16]}…")
    out(f"  the bank issued a refresh token with SHA-256 {issued[:16]}…  "
        + ("MATCH" if issued and issued == digest else "MISMATCH"))
    out("  (the token itself is never printed; the blob opens only in this row and column)")
    if issued != digest:
        raise SystemExit("the sealed refresh token did not open to the bank's token")
    if credential.dpop_key_sealed is not None:
        await _dpop_key(demo, credential, key, out)


async def _dpop_key(demo: Demo, credential: Credential, key: WrappedKey, out: Out) -> None:
    """Show that the tokens are bound to the connection's sealed DPoP key (RFC 9449)."""
    custody = demo.services.custody[demo.services.router.region_of(credential.connection_id)]
    dpop = await open_dpop_key(custody, key, credential)
    access = await custody.sealer.open_from(key, credential, "access_token_sealed") or ""
    assert dpop is not None
    bound = demo.bank.gate.bound_key(access) if isinstance(demo.bank, Fapi2SandboxBank) else None
    out("")
    out(f"The connection's DPoP key (credentials.dpop_key_sealed, "
        f"{len(bytes(credential.dpop_key_sealed or b''))} bytes sealed, {dpop.algorithm}):")
    out(f"  JWK thumbprint (RFC 7638): {dpop.thumbprint}")
    out(f"  the bank bound the access token to: {bound}  "
        + ("MATCH" if bound == dpop.thumbprint else "MISMATCH"))
    if bound != dpop.thumbprint:
        raise SystemExit("the bank's tokens are not bound to the connection's DPoP key")


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="demo")
    parser.add_argument("--config")
    register(parser.add_subparsers(dest="command", required=True))
    namespace = parser.parse_args()
    sys.exit(namespace.handler(namespace))
