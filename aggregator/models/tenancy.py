"""Who calls the gateway and whose data it holds: applications, users, their data keys.

Applications are global configuration: the same row, with the same id and key digests,
is written to every configured region (:mod:`aggregator.applications`), so an API call
is authenticated by the region it is routed to without consulting any other region.
They hold no personal data: a name, redirect URIs and key digests.

Everything else in a region's database belongs to a user of that region, and holds the
user's id (``users.id`` is the home region's anchor; ``ON DELETE CASCADE`` reaches every
row a user owns, which is what erasure relies on).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aggregator.ids import ApplicationId, UserId
from aggregator.models.base import (
    ID_LENGTH,
    Base,
    app_column,
    created_column,
    digest_column,
    id_column,
    ref_column,
    sealed_column,
)
from aggregator.models.types import UTCDateTime


class Application(Base):
    """A FinTech app calling the API; replicated to every region with the same id."""

    __tablename__ = "applications"

    id: Mapped[ApplicationId] = mapped_column(String(ID_LENGTH), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: Exact-match allow-list for link sessions' redirect URIs (RFC 9700 §4.1.3).
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = created_column()
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Where outbound events went in releases before the URL was sealed; now NULL (a URL
    #: may carry a credential in its path or query): ``webhook_url_sealed`` holds it.
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    #: Where outbound events go (:mod:`aggregator.events.endpoints`), sealed like the
    #: signing secrets below; NULL (and no legacy URL): not configured.
    webhook_url_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: The signing secrets, AES-GCM under a key derived from this region's pepper (each
    #: region's copy is sealed under its own): never clear text, never logged.
    webhook_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: The secret before the last rotation, still signed with until it expires.
    webhook_previous_secret_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    webhook_previous_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: What the Link page shows of the app (aggregator/branding.py); NULL: its name
    #: and the gateway's look. The logo is a size-capped ``data:`` image URL.
    brand_name: Mapped[str | None] = mapped_column(String(80))
    brand_logo: Mapped[str | None] = mapped_column(Text)
    brand_accent: Mapped[str | None] = mapped_column(String(7))


class ApiKey(Base):
    """One API key of an application; several may be live during a rotation.

    The key is ``agk_{prefix}_{secret}``: ``prefix`` is public (shown in dashboards and
    logs, used to find the row), and only SHA-256 of the whole key is stored, which is
    enough for 256 bits of entropy (no KDF needed, as for any random bearer token).
    """

    __tablename__ = "api_keys"

    prefix: Mapped[str] = mapped_column(String(16), primary_key=True)
    application_id: Mapped[ApplicationId] = app_column()
    key_digest: Mapped[bytes] = digest_column()
    created_at: Mapped[datetime] = created_column()
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    application: Mapped[Application] = relationship(lazy="raise")


class User(Base):
    """An end user of one application, pinned to the home region named in its id.

    The application's own id for the user is opaque and may be PII (an email address
    is a common choice), so it is kept as a keyed hash for lookups and sealed for
    display; see :class:`aggregator.sealing.KeyedHasher`.
    """

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("application_id", "external_id_digest"),)

    id: Mapped[UserId] = id_column(primary_key=True)
    home_region: Mapped[str] = mapped_column(String(8), info={"region": "name"})
    application_id: Mapped[ApplicationId] = app_column()
    external_id_digest: Mapped[bytes] = digest_column()
    external_id_sealed: Mapped[bytes] = sealed_column(nullable=False)
    created_at: Mapped[datetime] = created_column()
    #: Set when an erasure is requested: link sessions are refused from then on, and
    #: writers that must not revive the user check it in their own transaction.
    erasing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)

    application: Mapped[Application] = relationship(lazy="raise")


class DataKeyRecord(Base):
    """A user's wrapped data key (DEK); deleting the row crypto-shreds the user.

    ``seal_count`` is the number of seals reserved under the key across all processes
    (:class:`aggregator.datakeys.SealLedger`), compared with the envelope's limit.
    """

    __tablename__ = "data_keys"

    user_id: Mapped[UserId] = ref_column("users.id", primary_key=True, index=False)
    dek_id: Mapped[str] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(16))
    kek_id: Mapped[str] = mapped_column(String(128))
    #: Indexed: rewrapping after a KEK rotation looks for rows below the newest version.
    kek_version: Mapped[int] = mapped_column(Integer, index=True)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    seal_count: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    created_at: Mapped[datetime] = created_column()
    rewrapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: While a rotated key's values are being resealed (aggregator.reseal): the key
    #: before, wrapped, to open what it sealed; NULL once every value is resealed.
    previous_dek_id: Mapped[str | None] = mapped_column(String(64))
    previous_kek_version: Mapped[int | None] = mapped_column(Integer)
    previous_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)

    user: Mapped[User] = relationship(lazy="raise")


class RegionSecret(Base):
    """A region-wide secret, wrapped under the region's KEK like a data key.

    The one secret today is ``pepper``, the HMAC key of keyed-hash lookups
    (:mod:`aggregator.pepper`). ``region`` stamps the database with the region it serves,
    so a database URL pointed at the wrong region is refused at start-up.
    """

    __tablename__ = "region_secrets"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    region: Mapped[str] = mapped_column(String(8), info={"region": "name"})
    dek_id: Mapped[str] = mapped_column(String(64), unique=True)
    provider: Mapped[str] = mapped_column(String(16))
    kek_id: Mapped[str] = mapped_column(String(128))
    kek_version: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = created_column()
