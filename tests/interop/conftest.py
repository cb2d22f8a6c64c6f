"""Fixtures running an independent, OpenID-certified authorization server on loopback.

The server is panva's ``oidc-provider`` from npm, pinned in ``oidc_provider/package.json`` and
configured by ``oidc_provider/server.mjs`` (see ``oidc_server.py``). Tests using it carry
``@pytest.mark.interop``: CI fails when they are skipped, which happens only when ``node`` or
``npm`` is missing.

``oidc_provider_factory`` (session)
    ``oidc_provider_factory(require_par=False, fapi2=False) -> OidcProviderServer``: one
    server per configuration, started on first use, stopped when the session ends;
    ``fapi2=True`` is the FAPI 2.0 configuration (PAR required, private_key_jwt, DPoP).
``oidc_provider`` (session)
    The default server: PAR offered, not required.
``interop_http`` (function)
    An ``httpx.AsyncClient`` for loopback: redirects not followed, proxies from the
    environment ignored.

Example::

    @pytest.mark.interop
    async def test_issuer(oidc_provider: OidcProviderServer, interop_http: AsyncClient) -> None:
        response = await interop_http.get(oidc_provider.discovery_url)
        assert response.json()["issuer"] == oidc_provider.issuer
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import httpx
import pytest

from .oidc_server import (
    NodeToolsMissing,
    OidcProviderServer,
    ensure_node_modules,
    find_node_tools,
    start_server,
    stop_server,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "interop: needs node/npm and the oidc-provider test server (CI fails if skipped)",
    )


class OidcProviderFactory(Protocol):
    def __call__(self, *, require_par: bool = False, fapi2: bool = False
                 ) -> OidcProviderServer: ...


@pytest.fixture(scope="session")
def oidc_provider_factory(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OidcProviderFactory]:
    """Start oidc-provider servers on demand, one per configuration; stop all at the end."""
    processes: list[subprocess.Popen[bytes]] = []
    servers: dict[tuple[bool, bool], OidcProviderServer] = {}

    def factory(*, require_par: bool = False, fapi2: bool = False) -> OidcProviderServer:
        if (require_par, fapi2) not in servers:
            try:
                node, npm = find_node_tools()
            except NodeToolsMissing as exc:
                pytest.skip(f"{exc}; CI treats this skip as a failure")
            ensure_node_modules(npm)
            name = "oidc-provider-fapi2" if fapi2 else (
                "oidc-provider-par" if require_par else "oidc-provider")
            server = start_server(node, tmp_path_factory.mktemp(name), require_par=require_par,
                                  fapi2=fapi2)
            processes.append(server.process)
            servers[(require_par, fapi2)] = server
        return servers[(require_par, fapi2)]

    try:
        yield factory
    finally:
        for process in processes:
            stop_server(process)


@pytest.fixture(scope="session")
def oidc_provider(oidc_provider_factory: OidcProviderFactory) -> OidcProviderServer:
    return oidc_provider_factory()


@pytest.fixture
async def interop_http() -> AsyncIterator[httpx.AsyncClient]:
    # trust_env=False: a proxy variable set in CI must not capture loopback traffic.
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(5.0), follow_redirects=False, trust_env=False
    ) as client:
        yield client
