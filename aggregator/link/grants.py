"""Turning a bank's token response into a connection and its sealed credential.

A new link creates both; update mode (re-consent) rewrites the credential of the
existing connection in place, so its id, accounts and transactions stay. Either way the
connection's ``consent_expires_at`` starts a new consent period, which re-arms the
worker's expiry warning (:mod:`aggregator.worker.consent`). The old
refresh token is handed back so the caller can revoke the superseded grant at the bank
once the new one is committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.custody import RegionCustody
from aggregator.ids import new_id
from aggregator.models import Connection, ConnectionStatus, Credential, LinkSession
from aggregator.sync.tokens import refresh_due_at
from connectors import TokenSet
from vault import WrappedKey


@dataclass(frozen=True, slots=True, repr=False)
class SavedGrant:
    """The connection the grant now backs; ``superseded`` is the old refresh token."""

    connection: Connection
    created: bool
    superseded: str | None
    #: Update mode: the consent resource the new one replaced, to delete at the bank.
    superseded_consent: str | None = None
    #: Update mode: the bank client that holds the superseded grant (None: static).
    superseded_client_id: str | None = None

    def __repr__(self) -> str:
        return f"SavedGrant(connection={self.connection.id!r}, created={self.created})"


async def save_grant(
    session: AsyncSession,
    custody: RegionCustody,
    key: WrappedKey,
    link: LinkSession,
    bank_id: str,
    tokens: TokenSet,
    now: datetime,
    *,
    consent_expires_at: datetime | None = None,
    consent_id: str | None = None,
    dpop_key: str | None = None,
    bank_client_id: str | None = None,
) -> SavedGrant:
    """Create or update the connection of ``link`` with ``tokens``, in ``session``.

    ``consent_expires_at`` is the new consent's end (``None``: not known);
    ``consent_id`` the bank's consent resource it was granted through, if any. ``dpop_key``
    is the grant's DPoP private key (RFC 9449; PKCS#8 PEM) at a bank that binds tokens
    to one: sealed with the tokens under the user's data key, so it lives exactly as
    long as the grant and erasure kills it. A re-consent brings a new key.
    ``bank_client_id`` is the application's own client that obtained the grant
    (aggregator/registrations.py); None: the profile's static client.
    """
    superseded = superseded_consent = superseded_client = None
    if link.update_connection_id is None:
        connection = Connection(
            id=new_id("con", custody.region), user_id=link.user_id,
            application_id=link.application_id, bank_id=bank_id,
            status=ConnectionStatus.ACTIVE, consent_expires_at=consent_expires_at,
            consent_id=consent_id, consent_granted_at=now if consent_id else None,
            created_at=now, updated_at=now, bank_client_id=bank_client_id,
        )
        credential = Credential(
            id=new_id("crd", custody.region), connection_id=connection.id,
            user_id=link.user_id,
        )
        session.add_all([connection, credential])
        created = True
    else:
        connection = (await session.execute(
            select(Connection).where(Connection.id == link.update_connection_id)
            .with_for_update()
        )).scalar_one()
        connection.status = ConnectionStatus.ACTIVE
        connection.status_reason = None
        connection.consent_expires_at = consent_expires_at
        superseded_consent = connection.consent_id
        superseded_client = connection.bank_client_id
        connection.bank_client_id = bank_client_id  # the new grant is that client's
        connection.consent_id = consent_id
        connection.consent_granted_at = now if consent_id else None
        connection.updated_at = now
        credential = (await session.execute(
            select(Credential).where(Credential.connection_id == connection.id)
        )).scalar_one()
        superseded = await custody.sealer.open_from(key, credential, "refresh_token_sealed")
        created = False
    await custody.sealer.seal_into(
        key, credential, "access_token_sealed", tokens.access_token, session=session
    )
    await custody.sealer.seal_into(
        key, credential, "refresh_token_sealed", tokens.refresh_token, session=session
    )
    await custody.sealer.seal_into(key, credential, "dpop_key_sealed", dpop_key, session=session)
    credential.scope = tokens.scope[:1024] if tokens.scope else None
    credential.access_expires_at = tokens.expires_at
    credential.refresh_due_at = refresh_due_at(tokens.expires_at, now)
    credential.lease_owner = credential.lease_expires_at = None
    credential.refresh_started_at = None
    credential.attempts = 0
    await session.flush()
    return SavedGrant(connection, created, superseded, superseded_consent, superseded_client)
