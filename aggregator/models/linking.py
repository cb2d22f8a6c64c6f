"""Linking a bank and keeping the grant alive: link sessions, connections, credentials."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Enum, Integer, String, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aggregator.ids import ApplicationId, ConnectionId, CredentialId, LinkSessionId, UserId
from aggregator.models.base import (
    Base,
    app_column,
    created_column,
    digest_column,
    id_column,
    ref_column,
    sealed_column,
    updated_column,
)
from aggregator.models.tenancy import Application, User
from aggregator.models.types import UTCDateTime


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as checked VARCHAR, not a native PostgreSQL ENUM: adding a state is then a
    # constraint change both dialects migrate the same way, within one transaction.
    return Enum(
        cls, name=name, native_enum=False, create_constraint=True, length=24,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class LinkStatus(enum.Enum):
    """Where a link session stands; only ``pending`` and ``authorizing`` may advance."""

    PENDING = "pending"  # created by the app's backend; the user has not picked a bank yet
    AUTHORIZING = "authorizing"  # the user was sent to the bank; awaiting the callback
    COMPLETED = "completed"  # the callback succeeded and produced (or updated) a connection
    FAILED = "failed"  # the bank or the user refused, or the code exchange failed
    EXPIRED = "expired"  # expires_at passed before completion; the token is dead


class ConnectionStatus(enum.Enum):
    """The health of a user's grant at one bank."""

    ACTIVE = "active"  # tokens are valid or refreshable; data syncs on schedule
    REAUTH_REQUIRED = "reauth_required"  # the bank refused the grant (invalid_grant, consent
    # expired): only the user can fix it, through an update-mode link session
    REVOKED = "revoked"  # ended by the user, the app or erasure; never used again
    ERROR = "error"  # a persistent failure on our or the bank's side; operators look at it


class LinkSession(Base):
    """One run of the hosted Link flow, from the app's request to the bank's callback.

    The link token and the OAuth ``state`` are bearer secrets: only their SHA-256 is
    stored. The PKCE verifier and the OIDC nonce are needed in clear at the callback, so
    they are sealed under the user's data key.
    """

    __tablename__ = "link_sessions"

    id: Mapped[LinkSessionId] = id_column(primary_key=True)
    user_id: Mapped[UserId] = ref_column("users.id")
    application_id: Mapped[ApplicationId] = app_column()
    token_digest: Mapped[bytes] = digest_column(unique=True)
    state_digest: Mapped[bytes | None] = digest_column(unique=True)
    #: SHA-256 of the cookie binding the flow to one browser (aggregator.link.browser).
    browser_digest: Mapped[bytes | None] = digest_column()
    bank_id: Mapped[str | None] = mapped_column(String(64))
    redirect_uri: Mapped[str] = mapped_column(String(2048))
    pkce_verifier_sealed: Mapped[bytes | None] = sealed_column()
    nonce_sealed: Mapped[bytes | None] = sealed_column()
    status: Mapped[LinkStatus] = mapped_column(_enum(LinkStatus, "link_status"))
    #: Update mode: re-consent this connection, which keeps its id and data.
    update_connection_id: Mapped[ConnectionId | None] = ref_column(
        "connections.id", nullable=True
    )
    #: The connection the session produced, once completed.
    connection_id: Mapped[ConnectionId | None] = ref_column("connections.id", nullable=True)
    created_at: Mapped[datetime] = created_column()
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The Link page's language as the app asked (``de``, ``fr-CA``…); NULL: the browser's.
    locale: Mapped[str | None] = mapped_column(String(16))

    # Many-to-one links, never loaded implicitly (async code must not lazy-load); they
    # also tell the unit of work to insert parents before children.
    user: Mapped[User] = relationship(lazy="raise")
    application: Mapped[Application] = relationship(lazy="raise")
    update_connection: Mapped[Connection | None] = relationship(
        lazy="raise", foreign_keys=[update_connection_id]
    )
    connection: Mapped[Connection | None] = relationship(
        lazy="raise", foreign_keys=[connection_id]
    )


class Connection(Base):
    """A user's grant at one bank, and the root of everything synced through it.

    ``change_seq`` is the last change sequence number handed out for the connection's
    transactions (:mod:`aggregator.store.changes`): sync cursors are positions in it.
    """

    __tablename__ = "connections"

    id: Mapped[ConnectionId] = id_column(primary_key=True)
    user_id: Mapped[UserId] = ref_column("users.id")
    application_id: Mapped[ApplicationId] = app_column()
    bank_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[ConnectionStatus] = mapped_column(
        _enum(ConnectionStatus, "connection_status")
    )
    #: A short code for the current status (``invalid_grant``), never free text.
    status_reason: Mapped[str | None] = mapped_column(String(64))
    #: The bank's or Plaid's id for the grant (consent id, Plaid ``item_id``): webhooks
    #: name it. Not a secret and not personal data.
    external_ref: Mapped[str | None] = mapped_column(String(255), index=True)
    #: When the user's consent at the bank ends (the bank's answer, else the profile's
    #: ``[consent] max_days`` from linking); the worker warns before it and flags after it.
    consent_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The ``consent_expires_at`` that ``connection.consent_expiring`` was sent for: one
    #: warning per consent period, re-armed by any renewal (the expiry then differs).
    consent_warned_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The bank's consent resource (OBIE ``ConsentId``, Berlin Group ``consentId``;
    #: connectors/consents), None for plain OAuth2 banks. In clear: not a credential
    #: (each call on it also needs the client's own key-bound token).
    consent_id: Mapped[str | None] = mapped_column(String(128))
    #: When the user last authorised that consent (OBIE ``x-fapi-auth-date``).
    consent_granted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The bank client that linked the connection: an application's own
    #: (``app_registrations``, dynamic registration); NULL: the profile's static client.
    #: Code exchange, refresh and revocation use the same client (a grant is the client's).
    bank_client_id: Mapped[str | None] = mapped_column(String(255))
    change_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()

    user: Mapped[User] = relationship(lazy="raise")
    application: Mapped[Application] = relationship(lazy="raise")


class Credential(Base):
    """The tokens of one connection, sealed, with what the refresh workers coordinate on.

    ``version`` is the ORM's optimistic lock (an UPDATE that finds another version
    changes nothing and raises); Core writers compare-and-set it themselves. A worker
    owns the row while ``lease_expires_at`` is in the future. ``refresh_started_at`` is
    set and committed *before* the refresh request leaves: a row found with it set and
    its lease expired crashed mid-refresh, and the bank may already have rotated the
    refresh token, so it is resolved rather than blindly retried (docs/architecture.md,
    "Refreshing").
    """

    __tablename__ = "credentials"

    id: Mapped[CredentialId] = id_column(primary_key=True)
    connection_id: Mapped[ConnectionId] = ref_column("connections.id", index=False, unique=True)
    user_id: Mapped[UserId] = ref_column("users.id")
    access_token_sealed: Mapped[bytes] = sealed_column(nullable=False)
    refresh_token_sealed: Mapped[bytes | None] = sealed_column()
    #: The connection's DPoP private key (RFC 9449), PKCS#8 PEM, for banks whose profile
    #: says ``sender_constraint = "dpop"``; dies with the user's data key on erasure.
    dpop_key_sealed: Mapped[bytes | None] = sealed_column()
    scope: Mapped[str | None] = mapped_column(String(1024))
    access_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refresh_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refresh_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    updated_at: Mapped[datetime] = updated_column()

    connection: Mapped[Connection] = relationship(lazy="raise")
    user: Mapped[User] = relationship(lazy="raise")

    __mapper_args__ = {"version_id_col": version}
