"""Errors raised by the gateway itself, one tree rooted at :class:`GatewayError`.

::

    GatewayError
    ├── ConfigError               the settings file or an environment override is invalid
    │   └── SchemaOutOfDate       a region's database is not at the revision this build needs
    ├── ResidencyViolation        a write would put one region's entity into another's store
    ├── InvalidId                 text given as an id cannot name anything held here
    │   ├── MalformedId           not an id the gateway issues, or not of the kind expected
    │   └── UnknownRegion         well formed, but its region is not configured here
    ├── InvalidApiKey             an API key is unknown, revoked, or its application disabled
    ├── SealReservationMissing    a value was sealed without reserving seal budget first (a bug)
    ├── AuditValueRejected        an audit field could carry a secret or PII, so it is refused
    ├── EventPayloadRejected      an outbound event's data holds more than ids and statuses
    └── LeaseHeld                 another process holds a region's KEK rotation lease

`vault.VaultError` and `connectors.ConnectorError` are the other packages' roots; the
HTTP layer and the CLI map all three. :class:`InvalidId` and its subclasses become a 404
problem (the resource cannot exist), never a 500; :class:`InvalidApiKey` a 401.
"""

from __future__ import annotations

from datetime import datetime


class GatewayError(Exception):
    """Root of every error the gateway raises on its own account."""

    code = "gateway_error"


class ConfigError(GatewayError):
    """Settings are invalid; raised at start-up with the file and key at fault."""

    code = "invalid_configuration"


class SchemaOutOfDate(ConfigError):
    """Raised at start-up when a region's database needs `aggregator migrate` first."""

    code = "schema_out_of_date"


class ResidencyViolation(GatewayError):
    """Raised when an entity of one region is about to be written through another's session."""

    code = "residency_violation"


class InvalidId(GatewayError):
    """An id from outside cannot name anything here; the HTTP layer answers 404."""

    code = "invalid_id"


class MalformedId(InvalidId):
    """Raised when text is not an id the gateway issues, or not of the kind expected."""

    code = "malformed_id"


class UnknownRegion(InvalidId):
    """Raised when a well-formed id names a region this deployment does not run."""

    code = "unknown_region"


class InvalidApiKey(GatewayError):
    """Raised when a presented API key is unknown, revoked, or its application disabled."""

    code = "invalid_api_key"


class SealReservationMissing(GatewayError):
    """Raised when a value is sealed outside :class:`aggregator.sealing.Sealer`; a bug."""

    code = "seal_reservation_missing"


class AuditValueRejected(GatewayError):
    """Raised when an audit field is not an id, enum, request id or IP address."""

    code = "audit_value_rejected"


class EventPayloadRejected(GatewayError):
    """Raised by ``aggregator.events.emit`` for data that is not only ids, codes and counts."""

    code = "event_payload_rejected"


class LeaseHeld(GatewayError):
    """Raised when another process holds the region's rotation lease (a worker rotating
    or rewrapping, or another ``aggregator keys`` command); the CLI says try again then.

    Defined here, not in :mod:`aggregator.worker.rotation` (which re-exports it), because
    the worker and the CLI both raise it."""

    code = "rotation_in_progress"

    def __init__(self, region: str, owner: str | None, until: datetime | None) -> None:
        when = f" until {until:%Y-%m-%d %H:%M:%S} UTC" if until else ""
        super().__init__(f"region {region}: {owner or 'another process'} is rotating or "
                         f"rewrapping its KEK{when}; try again then")
