"""The banks a gateway process talks to: profiles, one OAuth client each, API dialects.

Built once per process around one shared ``httpx.AsyncClient`` (STYLE: all outbound HTTP
through an injected client), so discovery runs once per bank and connections pool. The
Link flow asks it for a bank's OAuth client; the sync job for a dialect bound to one
connection's access token.

A bank whose profile names a transport certificate (RFC 8705) or its own CA gets its own
client, built by the egress factory with that TLS context, so the certificate is
presented on every call to that bank (PAR, token, revocation, account API) and never to
another. Those clients are the directory's to close (:meth:`BankDirectory.aclose`).

An application may have its own client at a bank (dynamic registration,
:mod:`aggregator.registrations`); a connection it linked names that client
(``connections.bank_client_id``), and :meth:`BankDirectory.client` hands out an OAuth
client built from the bank's profile with that client id and its secret, which the
attached :class:`ClientSecrets` opens from the region's database on first use.

Plaid is one more "bank" per region: connections through it have ``bank_id`` "plaid"
(:data:`PLAID_BANK_ID`), and the region's :class:`~connectors.PlaidConnector` and sync
budget are attached once at start-up (:meth:`BankDirectory.attach_plaid`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Protocol

import httpx

from aggregator.errors import GatewayError
from connectors import (
    BankOAuthClient,
    BankProfile,
    ConsentManager,
    Dialect,
    DPoPKey,
    EgressPolicy,
    PlaidConnector,
    SyncPolicy,
    bank_request_hooks,
    bank_ssl_context,
    consent_manager,
    egress_client,
    get_dialect,
    load_client_credentials,
)
from vault import Secret

#: The ``bank_id`` of every connection made through Plaid, in any region.
PLAID_BANK_ID = "plaid"


class UnknownBank(GatewayError):
    """Raised when a bank id names no configured profile (or one of another region)."""

    code = "unknown_bank"


class ClientSecrets(Protocol):
    """Opens the secret of an application's own client at a bank (None: it has none,
    e.g. ``private_key_jwt``); :class:`UnknownBank` when no such client is registered."""

    async def secret(self, region: str, bank_id: str, client_id: str) -> Secret | None: ...


class BankDirectory:
    """Profiles by id, with lazily built, shared OAuth clients.

    Example::

        banks = BankDirectory(gateway_profiles(settings), http)
        client = banks.oauth("sandbox-eu")
        accounts = await banks.dialect("sandbox-eu", access_token).accounts()
    """

    def __init__(
        self,
        profiles: Mapping[str, BankProfile],
        http: httpx.AsyncClient,
        environ: Mapping[str, str] | None = None,
        *,
        policy: EgressPolicy | None = None,
    ) -> None:
        self._profiles = dict(profiles)
        self._http = http
        self._environ = environ
        self._policy = policy or EgressPolicy()
        self._clients: dict[str, BankOAuthClient] = {}
        self._consents: dict[str, ConsentManager | None] = {}
        self._bank_http: dict[str, httpx.AsyncClient] = {}
        self._plaid: dict[str, tuple[PlaidConnector, SyncPolicy]] = {}
        self._registered: dict[tuple[str, str], BankOAuthClient] = {}
        self._secrets: ClientSecrets | None = None

    def attach_client_secrets(self, secrets: ClientSecrets) -> None:
        """Serve connections linked by applications' own clients (dynamic registration)."""
        self._secrets = secrets

    @property
    def http(self) -> httpx.AsyncClient:
        return self._http

    def profile(self, bank_id: str, *, region: str | None = None) -> BankProfile:
        """The bank's profile; ``region`` demands that the bank serves that region."""
        profile = self._profiles.get(bank_id)
        if profile is None or (region is not None and profile.region != region):
            where = f" in region {region}" if region else ""
            raise UnknownBank(f"no bank {bank_id!r}{where}")
        return profile

    def in_region(self, region: str) -> list[BankProfile]:
        """The banks a user homed in ``region`` may link, by display name."""
        found = [p for p in self._profiles.values() if p.region == region]
        return sorted(found, key=lambda p: (p.display_name.casefold(), p.id))

    def bank_ids(self, region: str) -> list[str]:
        """The ids connections of ``region`` name their bank by (the directory's keys)."""
        return sorted(k for k, p in self._profiles.items() if p.region == region)

    def http_for(self, bank_id: str) -> httpx.AsyncClient:
        """The client calls to this bank go through: its own when it has a TLS identity."""
        client = self._bank_http.get(bank_id)
        if client is not None:
            return client
        profile = self.profile(bank_id)
        context = bank_ssl_context(profile)
        hooks = bank_request_hooks(profile, self._environ)  # a QSealC seal (Berlin Group)
        if context is None and not hooks:
            return self._http
        client = egress_client(self._policy, ssl_context=context,
                               event_hooks={"request": hooks} if hooks else None)
        self._bank_http[bank_id] = client
        return client

    async def aclose(self) -> None:
        """Close the per-bank clients (the shared one belongs to whoever passed it)."""
        clients, self._bank_http = list(self._bank_http.values()), {}
        for client in clients:
            await client.aclose()

    def oauth(self, bank_id: str) -> BankOAuthClient:
        client = self._clients.get(bank_id)
        if client is None:
            client = BankOAuthClient.from_environment(
                self.profile(bank_id), self.http_for(bank_id), self._environ
            )
            self._clients[bank_id] = client
        return client

    async def client(self, bank_id: str, client_id: str | None, region: str) -> BankOAuthClient:
        """The OAuth client a connection was linked with: the profile's static one when
        ``client_id`` is None (or the static id), else the application's own client."""
        if client_id is None:
            return self.oauth(bank_id)
        profile = self.profile(bank_id)
        if client_id == profile.client_id:
            return self.oauth(bank_id)
        found = self._registered.get((bank_id, client_id))
        if found is not None:
            return found
        if self._secrets is None:
            raise UnknownBank(f"{bank_id}: client {client_id} is not the profile's, and no "
                              "registrations are attached")
        secret = await self._secrets.secret(region, bank_id, client_id)
        _, signer = load_client_credentials(profile, self._environ)
        client = BankOAuthClient(dataclasses.replace(profile, client_id=client_id),
                                 self.http_for(bank_id), secret, signer)
        self._registered[(bank_id, client_id)] = client
        return client

    def forget_client(self, bank_id: str, client_id: str) -> None:
        """Drop a cached client whose credentials changed or that was deleted."""
        self._registered.pop((bank_id, client_id), None)

    def consents(self, bank_id: str) -> ConsentManager | None:
        """The bank's consent manager (connectors/consents); None for plain OAuth2 banks."""
        if bank_id not in self._consents:
            self._consents[bank_id] = consent_manager(
                self.profile(bank_id), self.oauth(bank_id), self.http_for(bank_id))
        return self._consents[bank_id]

    def dialect(
        self, bank_id: str, access_token: str, dpop_key: DPoPKey | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Dialect:
        """The bank's API for one connection; with its DPoP key, every call carries a
        proof bound to the token (RFC 9449 §7) and the bank's nonces are shared;
        ``headers`` come from its consent manager (connectors/consents)."""
        profile = self.profile(bank_id)
        cls = get_dialect(profile.api.dialect)
        auth = self.oauth(bank_id).dpop_auth(dpop_key, access_token) if dpop_key else None
        return cls(self.http_for(bank_id), profile.api.base_url, access_token, headers,
                   auth=auth)

    def attach_plaid(self, region: str, connector: PlaidConnector, policy: SyncPolicy) -> None:
        """Serve ``region``'s Plaid connections through ``connector`` (one per region)."""
        self._plaid[region] = (connector, policy)

    def is_plaid(self, bank_id: str) -> bool:
        return bank_id == PLAID_BANK_ID

    def plaid_regions(self) -> list[str]:
        return sorted(self._plaid)

    def plaid(self, region: str) -> PlaidConnector:
        """The region's Plaid connector; :class:`UnknownBank` where Plaid is not set up."""
        found = self._plaid.get(region)
        if found is None:
            raise UnknownBank(f"no Plaid in region {region}")
        return found[0]

    def plaid_policy(self, region: str) -> SyncPolicy:
        found = self._plaid.get(region)
        return found[1] if found is not None else SyncPolicy()
