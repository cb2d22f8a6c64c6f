"""An application's own client at a bank, made by dynamic registration (RFC 7591).

A bank's consent page names the client registered with it; with ``[registration]
per_application = true`` in a bank's profile, each application gets its own client
there, named after the application's brand (aggregator/registrations.py).

Decision: the row lives in the region of the bank's profile only, the region whose
links it serves (a bank profile belongs to one region, and users link banks of their
home region), although applications themselves are replicated everywhere. A client is
the bank's relation with the gateway for that app in that region: copying its secret
into other regions' databases would only widen where it could leak from.

The client id is in clear (it travels in every authorization URL); the client secret
and the registration access token are sealed like webhook signing secrets: AES-256-GCM
under a key derived from the region's pepper for the application, with associated data
naming the application, the bank and the slot (aggregator/registrations.py).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Enum, Integer, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from aggregator.ids import ApplicationId
from aggregator.models.base import Base, app_column, created_column, updated_column
from aggregator.models.types import UTCDateTime


class RegistrationStatus(enum.Enum):
    """Where one application's client at one bank stands."""

    ACTIVE = "active"  # registered, and its client_name is the app's current brand
    STALE = "stale"  # the brand changed: updated (RFC 7592 PUT) before the next link
    DELETING = "deleting"  # the app was disabled: RFC 7592 DELETE pending or to retry
    DELETED = "deleted"  # the bank confirmed the deletion; kept for the audit trail


class AppRegistration(Base):
    """One application's dynamically registered client at one bank."""

    __tablename__ = "app_registrations"

    application_id: Mapped[ApplicationId] = app_column(primary_key=True, index=False)
    bank_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(255), index=True)
    #: The name the bank shows on its consent page, as last registered.
    client_name: Mapped[str] = mapped_column(String(200))
    client_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    registration_access_token_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: RFC 7592 §3 configuration URI (the bank's, holding the client id, no secret).
    registration_client_uri: Mapped[str | None] = mapped_column(String(2048))
    status: Mapped[RegistrationStatus] = mapped_column(
        Enum(
            RegistrationStatus,
            name="registration_status",
            native_enum=False,
            create_constraint=True,
            length=16,
            validate_strings=True,
            values_callable=lambda members: [m.value for m in members],
        )
    )
    #: Failed update or deletion attempts since the last success, and the last error code.
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
