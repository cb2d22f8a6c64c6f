"""Applications' own clients at banks, by dynamic client registration (RFC 7591, 7592).

A bank's consent page shows the name of the client registered with it, and the gateway
is normally one client per bank (the profile's static ``client_id``). A bank profile
with ``[registration] per_application = true`` gets one client per application instead,
so the user sees the application's brand at the bank (docs/architecture.md, "Linking"):

- **Register** lazily, at an application's first link to that bank
  (:meth:`Registrations.client_for_link`): ``client_name`` is the brand name (else the
  app's name), ``redirect_uris`` the gateway's callback, and the static client's
  authentication method, grant types and (``private_key_jwt``) public key.
- **Update** when the brand changes: :func:`aggregator.applications.update_application`
  marks the registration ``stale`` in the same transaction, and the next link PUTs the
  new metadata (RFC 7592 §2.2) before sending the user to the bank.
- **Delete** when the application is disabled: the registration is marked ``deleting``
  in the same transaction, and :class:`RegistrationSweep` (a worker job) sends the
  DELETE (RFC 7592 §2.3), retrying a failure on its next pass; each outcome is audited.

Connections keep the client that linked them (``connections.bank_client_id``): code
exchange, refresh and revocation use it (:meth:`aggregator.sync.BankDirectory.client`).
Connections linked before keep the static client.

A registration lives in the bank's region only (aggregator/models/registrations.py says
why). Its client secret and registration access token are sealed the way webhook
secrets are (aggregator/events/endpoints.py): AES-256-GCM under HMAC-SHA256 of the
application and bank by the region's pepper, with associated data naming application,
bank and slot, so a blob copied to another row or slot does not open.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator import audit
from aggregator.custody import RegionCustody
from aggregator.errors import GatewayError
from aggregator.models import Application, AppRegistration, RegistrationStatus
from aggregator.models.base import utcnow
from aggregator.sealing import KeyedHasher
from aggregator.store import RegionRouter
from aggregator.sync.banks import BankDirectory, UnknownBank
from connectors import (
    BankProfile,
    BankUnsupported,
    ClientAuthMethod,
    ClientMetadata,
    ClientRegistration,
    ConnectorError,
    GrantRevoked,
    delete_client,
    load_client_credentials,
    register_client,
    update_client,
)
from vault import Secret

log = logging.getLogger(__name__)

_CONTEXT = b"aggregator/bank-client/v1"
_NONCE = 12
SECRET, TOKEN = "client_secret", "registration_access_token"
ACTOR = "gateway"


class RegistrationUnavailable(GatewayError):
    """Raised when an application's client at a bank cannot be used for a new link (its
    application is disabled and the registration is being deleted)."""

    code = "registration_unavailable"


def _aesgcm(hasher: KeyedHasher, app_id: str, bank_id: str) -> AESGCM:
    return AESGCM(hasher.digest("bank_client_secret", app_id, bank_id))


def _aad(app_id: str, bank_id: str, slot: str) -> bytes:
    return b"|".join((_CONTEXT, app_id.encode(), bank_id.encode(), slot.encode()))


def seal(
    hasher: KeyedHasher, app_id: str, bank_id: str, slot: str, value: Secret | None
) -> bytes | None:
    if value is None:
        return None
    nonce = os.urandom(_NONCE)
    box = _aesgcm(hasher, app_id, bank_id)
    return nonce + box.encrypt(nonce, value.reveal().encode(), _aad(app_id, bank_id, slot))


def unseal(
    hasher: KeyedHasher, app_id: str, bank_id: str, slot: str, blob: bytes | None
) -> Secret | None:
    if blob is None:
        return None
    raw = bytes(blob)
    box = _aesgcm(hasher, app_id, bank_id)
    return Secret(box.decrypt(raw[:_NONCE], raw[_NONCE:], _aad(app_id, bank_id, slot)).decode())


def client_name_of(app: Application) -> str:
    """What the bank should call the application: its brand name, else its name."""
    return app.brand_name or app.name


class Registrations:
    """Registers, updates and deletes applications' clients; opens their secrets.

    Example::

        registrations = Registrations(router, custody, banks)
        banks.attach_client_secrets(registrations)
        client_id = await registrations.client_for_link("eu", app_id, "bank-x", callback)
        oauth = await banks.client("bank-x", client_id, "eu")
    """

    def __init__(
        self, router: RegionRouter, custody: Mapping[str, RegionCustody], banks: BankDirectory
    ) -> None:
        self.router = router
        self.custody = custody
        self.banks = banks
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def per_application(self, bank_id: str) -> bool:
        policy = self.banks.profile(bank_id).registration
        return policy is not None and policy.per_application

    async def secret(self, region: str, bank_id: str, client_id: str) -> Secret | None:
        """The client secret of an application's client (``ClientSecrets`` protocol)."""
        async with self.router.reader(region) as session:
            row = (
                await session.execute(
                    select(AppRegistration).where(
                        AppRegistration.bank_id == bank_id,
                        AppRegistration.client_id == client_id,
                    )
                )
            ).scalar_one_or_none()
        if row is None or row.status is RegistrationStatus.DELETED:
            # Deleted, or replaced after the bank forgot it: its grants ended with it.
            raise GrantRevoked(f"{bank_id}: client {client_id} no longer exists")
        return unseal(
            self.custody[region].hasher,
            row.application_id,
            bank_id,
            SECRET,
            row.client_secret_sealed,
        )

    async def client_for_link(
        self, region: str, app_id: str, bank_id: str, callback_url: str
    ) -> str | None:
        """The client id a new link of ``app_id`` to ``bank_id`` uses; None: the static
        client. Registers or updates the application's client first where needed."""
        if not self.per_application(bank_id):
            return None
        # One registration per app and bank in this process (a second link waits).
        lock = self._locks.setdefault((app_id, bank_id), asyncio.Lock())
        async with lock:
            async with self.router.reader(region) as session:
                app = await session.get(Application, app_id)
                row = await session.get(AppRegistration, (app_id, bank_id))
            if app is None:
                raise UnknownBank(f"no application {app_id} in {region}")
            name = client_name_of(app)
            if row is not None and row.status is RegistrationStatus.DELETING:
                raise RegistrationUnavailable(f"{bank_id}: the client of {app_id} is being deleted")
            if row is None or row.status is RegistrationStatus.DELETED:
                return await self._register(region, app_id, bank_id, name, callback_url)
            if row.status is RegistrationStatus.STALE or row.client_name != name:
                return await self._update(region, row, name, callback_url)
            return row.client_id

    def _metadata(self, profile: BankProfile, name: str, callback_url: str) -> ClientMetadata:
        method = profile.client_auth_method
        jwks = None
        if method is ClientAuthMethod.PRIVATE_KEY_JWT:
            _, signer = load_client_credentials(profile)
            public = getattr(signer, "public_jwk", None)
            if public is None:
                raise BankUnsupported(f"{profile.id}: the signing key has no public JWK")
            jwks = {"keys": [public()]}
        return ClientMetadata(
            client_name=name,
            redirect_uris=(callback_url,),
            token_endpoint_auth_method=method.value,
            scope=profile.scope,
            jwks=jwks,
        )

    async def _endpoint(self, bank_id: str) -> str:
        profile = self.banks.profile(bank_id)
        assert profile.registration is not None  # per_application() checked it
        if profile.registration.endpoint:
            return profile.registration.endpoint
        metadata = await self.banks.oauth(bank_id).metadata()
        found = metadata.raw.get("registration_endpoint")
        if not isinstance(found, str) or not found:
            raise BankUnsupported(
                f"{bank_id}: the bank advertises no registration_endpoint "
                "(RFC 8414 §2); set [registration] endpoint"
            )
        return found

    async def _register(
        self, region: str, app_id: str, bank_id: str, name: str, callback_url: str
    ) -> str:
        profile = self.banks.profile(bank_id)
        http = self.banks.http_for(bank_id)
        registered = await register_client(
            http,
            await self._endpoint(bank_id),
            self._metadata(profile, name, callback_url),
            bank=bank_id,
        )
        hasher = self.custody[region].hasher
        now = utcnow()
        try:
            async with self.router.session(region) as session, session.begin():
                row = await session.get(AppRegistration, (app_id, bank_id))
                if row is None:
                    row = AppRegistration(application_id=app_id, bank_id=bank_id, created_at=now)
                    session.add(row)
                self._store(row, registered, name, hasher)
                await audit.record(
                    session, actor=ACTOR, action="bank_client.registered", target_id=app_id, at=now
                )
        except IntegrityError:
            # Another process registered the same app at the same bank first: ours goes.
            await self._discard(registered, bank_id)
            async with self.router.reader(region) as session:
                existing = await session.get(AppRegistration, (app_id, bank_id))
            if existing is None:
                raise
            return existing.client_id
        log.info("bank %s: registered a client for application %s", bank_id, app_id)
        return registered.client_id

    async def _discard(self, registered: ClientRegistration, bank_id: str) -> None:
        try:
            await delete_client(self.banks.http_for(bank_id), registered, bank=bank_id)
        except ConnectorError as exc:
            log.warning("bank %s: a duplicate registration was not deleted: %s", bank_id, exc.code)

    async def _update(self, region: str, row: AppRegistration, name: str, callback_url: str) -> str:
        hasher = self.custody[region].hasher
        app_id, bank_id = row.application_id, row.bank_id
        current = self._current(row, hasher)
        profile = self.banks.profile(bank_id)
        try:
            updated = await update_client(
                self.banks.http_for(bank_id),
                current,
                self._metadata(profile, name, callback_url),
                bank=bank_id,
            )
        except ConnectorError as exc:
            # The old name is still a working client: link with it, try again next time.
            log.warning("bank %s: client of %s not updated: %s", bank_id, app_id, exc.code)
            async with self.router.session(region) as session, session.begin():
                await session.execute(
                    update(AppRegistration)
                    .where(
                        AppRegistration.application_id == app_id,
                        AppRegistration.bank_id == bank_id,
                    )
                    .values(attempts=AppRegistration.attempts + 1, last_error=exc.code)
                )
                await audit.record(
                    session, actor=ACTOR, action="bank_client.update_failed", target_id=app_id
                )
            return row.client_id
        async with self.router.session(region) as session, session.begin():
            fresh = await session.get(AppRegistration, (app_id, bank_id))
            if fresh is not None:
                self._store(fresh, updated, name, hasher)
            await audit.record(session, actor=ACTOR, action="bank_client.updated", target_id=app_id)
        self.banks.forget_client(bank_id, row.client_id)  # the secret may have rotated
        return updated.client_id

    @staticmethod
    def _current(row: AppRegistration, hasher: KeyedHasher) -> ClientRegistration:
        app_id, bank_id = row.application_id, row.bank_id
        return ClientRegistration(
            client_id=row.client_id,
            client_name=row.client_name,
            client_secret=unseal(hasher, app_id, bank_id, SECRET, row.client_secret_sealed),
            registration_access_token=unseal(
                hasher, app_id, bank_id, TOKEN, row.registration_access_token_sealed
            ),
            registration_client_uri=row.registration_client_uri,
        )

    @staticmethod
    def _store(
        row: AppRegistration, registered: ClientRegistration, name: str, hasher: KeyedHasher
    ) -> None:
        app_id, bank_id = row.application_id, row.bank_id
        row.client_id = registered.client_id
        row.client_name = registered.client_name or name
        row.client_secret_sealed = seal(hasher, app_id, bank_id, SECRET, registered.client_secret)
        row.registration_access_token_sealed = seal(
            hasher, app_id, bank_id, TOKEN, registered.registration_access_token
        )
        row.registration_client_uri = registered.registration_client_uri
        row.status = RegistrationStatus.ACTIVE
        row.attempts = 0
        row.last_error = None
        row.deleted_at = None

    async def forget(self, region: str, app_id: str, bank_id: str, client_id: str) -> None:
        """The bank refused the client as unknown (``invalid_client``): the next link
        registers a new one. Audited; connections linked by the old client will find
        their grants refused and ask their users to re-consent."""
        async with self.router.session(region) as session, session.begin():
            await session.execute(
                update(AppRegistration)
                .where(
                    AppRegistration.application_id == app_id,
                    AppRegistration.bank_id == bank_id,
                    AppRegistration.client_id == client_id,
                    AppRegistration.status != RegistrationStatus.DELETING,
                )
                .values(
                    status=RegistrationStatus.DELETED,
                    deleted_at=utcnow(),
                    last_error="invalid_client",
                )
            )
            await audit.record(
                session, actor=ACTOR, action="bank_client.unknown_at_bank", target_id=app_id
            )
        self.banks.forget_client(bank_id, client_id)
        log.warning(
            "bank %s: the client of application %s is unknown there; registering a new one",
            bank_id,
            app_id,
        )

    async def delete_pending(self, region: str, *, batch: int = 20) -> int:
        """Send RFC 7592 DELETE for registrations of disabled applications; a failure
        stays ``deleting`` (attempts and the error code kept) for the next pass."""
        async with self.router.reader(region) as session:
            rows = (
                (
                    await session.execute(
                        select(AppRegistration)
                        .where(AppRegistration.status == RegistrationStatus.DELETING)
                        .order_by(AppRegistration.updated_at)
                        .limit(batch)
                    )
                )
                .scalars()
                .all()
            )
        hasher = self.custody[region].hasher
        done = 0
        for row in rows:
            error: str | None = None
            action = "bank_client.deleted"
            if row.registration_client_uri is None or row.registration_access_token_sealed is None:
                # The bank gave no way to manage the client (RFC 7592 is optional for it):
                # nothing to send; the operator removes it at the bank by hand.
                action = "bank_client.deleted_locally"
            else:
                try:
                    await delete_client(
                        self.banks.http_for(row.bank_id),
                        self._current(row, hasher),
                        bank=row.bank_id,
                    )
                except (ConnectorError, GatewayError) as exc:
                    error, action = exc.code, "bank_client.delete_failed"
                    log.warning(
                        "bank %s: client of %s not deleted (will retry): %s",
                        row.bank_id,
                        row.application_id,
                        error,
                    )
            done += await self._deleted(region, row, error, action)
        return done

    async def _deleted(
        self, region: str, row: AppRegistration, error: str | None, action: str
    ) -> int:
        now = utcnow()
        where = (
            AppRegistration.application_id == row.application_id,
            AppRegistration.bank_id == row.bank_id,
            AppRegistration.status == RegistrationStatus.DELETING,
        )
        async with self.router.session(region) as session, session.begin():
            if error is None:
                values: dict[str, object] = {
                    "status": RegistrationStatus.DELETED,
                    "deleted_at": now,
                    "last_error": None,
                    "client_secret_sealed": None,
                    "registration_access_token_sealed": None,
                }
            else:
                values = {"attempts": AppRegistration.attempts + 1, "last_error": error}
            moved = await session.execute(update(AppRegistration).where(*where).values(**values))
            if getattr(moved, "rowcount", 0) != 1:
                return 0  # another worker settled it meanwhile, and audited it
            await audit.record(
                session, actor=ACTOR, target_id=row.application_id, at=now, action=action
            )
        if error is None:
            self.banks.forget_client(row.bank_id, row.client_id)
        return 1 if error is None else 0


async def mark_stale(session: AsyncSession, app_id: str) -> None:
    """The app's brand changed: its live clients are updated before their next link."""
    await session.execute(
        update(AppRegistration)
        .where(
            AppRegistration.application_id == app_id,
            AppRegistration.status == RegistrationStatus.ACTIVE,
        )
        .values(status=RegistrationStatus.STALE)
    )


async def mark_for_deletion(session: AsyncSession, app_id: str) -> None:
    """The app was disabled: its clients are deleted at their banks by the worker."""
    await session.execute(
        update(AppRegistration)
        .where(
            AppRegistration.application_id == app_id,
            AppRegistration.status.in_((RegistrationStatus.ACTIVE, RegistrationStatus.STALE)),
        )
        .values(status=RegistrationStatus.DELETING, attempts=0, last_error=None)
    )


class RegistrationSweep:
    """Worker job: delete disabled applications' clients at their banks, every region."""

    name = "registrations"

    def __init__(
        self, registrations: Registrations, *, interval: float = 60.0, batch: int = 20
    ) -> None:
        self.registrations = registrations
        self.interval = interval
        self.batch = batch

    async def run_once(self, stop: asyncio.Event) -> int:
        done = 0
        for region in self.registrations.router.regions:
            if stop.is_set():
                break
            done += await self.registrations.delete_pending(region, batch=self.batch)
        return done


def attach(
    router: RegionRouter, custody: Mapping[str, RegionCustody], banks: BankDirectory
) -> Registrations:
    """Give ``banks`` the registrations' secrets; returns the registrations."""
    registrations = Registrations(router, custody, banks)
    banks.attach_client_secrets(registrations)
    return registrations
