"""The audit trail: append-only, one hash chain per region, free of secrets and PII.

Each event's hash is SHA-256 over its canonical encoding, which includes the previous
event's hash, the region and the event's position::

    b"aggregator/audit/v1" ‖ for each of (region, seq, id, occurred_at, actor, action,
        target_id, request_id, client_ip, prev_hash):  0x00 if absent, else
        0x01 ‖ 4-byte big-endian length ‖ UTF-8 bytes   (prev_hash as 64 hex digits,
        occurred_at as ISO 8601 UTC with microseconds)

The first event's ``prev_hash`` is 32 zero bytes. Editing, deleting, inserting or
reordering events, or copying another region's chain in, breaks a link that
:func:`verify` names. (Someone who can write the database can also recompute every hash
after a forgery; anchoring the head outside the database is a later step.)

Appends take turns on the single ``audit_head`` row: ``SELECT … FOR UPDATE`` on
PostgreSQL; on SQLite the write session's ``BEGIN IMMEDIATE`` already made it the only
writer. The lock is held until the caller's commit, so record the event last in a unit
of work, right before committing, and the event commits or rolls back with the change
it describes.

Nothing free-form is accepted: actors are application, user or console operator ids or
a system actor, actions dotted lowercase codes, targets ids, request ids ours or UUIDs,
client IPs parsed addresses. A token or an email address cannot take any of those shapes.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from aggregator.errors import AuditValueRejected, InvalidId
from aggregator.ids import is_request_id, new_id, parse_id
from aggregator.models import AuditEvent, AuditHead
from aggregator.models.base import table_of, utcnow
from aggregator.store.residency import REGION_KEY

#: Actors that are not an application or a user.
SYSTEM_ACTORS = frozenset({"gateway", "worker", "operator", "webhook"})
GENESIS = bytes(32)
_ACTION = re.compile(r"[a-z][a-z_]{0,30}(\.[a-z][a-z_]{0,30}){1,2}")
_CONTEXT = b"aggregator/audit/v1"
_events = table_of(AuditEvent)
_head = table_of(AuditHead)
_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One event as stored; ``hash`` covers every other field and the region."""

    seq: int
    id: str
    occurred_at: datetime
    actor: str
    action: str
    target_id: str | None
    request_id: str | None
    client_ip: str | None
    prev_hash: bytes
    hash: bytes


def canonical(region: str, event: AuditRecord) -> bytes:
    fields = (
        region, str(event.seq), event.id,
        event.occurred_at.astimezone(UTC).isoformat(timespec="microseconds"),
        event.actor, event.action, event.target_id, event.request_id, event.client_ip,
        event.prev_hash.hex(),
    )
    out = bytearray(_CONTEXT)
    for value in fields:
        if value is None:
            out += b"\x00"
        else:
            raw = value.encode("utf-8")
            out += b"\x01" + len(raw).to_bytes(4, "big") + raw
    return bytes(out)


def event_hash(region: str, event: AuditRecord) -> bytes:
    return hashlib.sha256(canonical(region, event)).digest()


def anonymize_ip(address: str) -> str:
    """An end user's address reduced to its network (/24, /48): locates, not identifies."""
    ip = ipaddress.ip_address(address)
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False).network_address)


async def record(
    session: AsyncSession,
    *,
    actor: str,
    action: str,
    target_id: str | None = None,
    request_id: str | None = None,
    client_ip: str | None = None,
    at: datetime | None = None,
) -> AuditRecord:
    """Append an event to the chain of the session's region, in the session's transaction.

    ``client_ip`` is the calling backend's address; for an end user's browser (the Link
    page) pass :func:`anonymize_ip` of it, since a full address is personal data.
    """
    region = session.info[REGION_KEY]
    _check(actor, action, target_id, request_id)
    ip = _ip(client_ip)
    head = (await session.execute(
        select(_head.c.seq, _head.c.hash).where(_head.c.id == 1).with_for_update()
    )).one()
    event = AuditRecord(
        seq=head.seq + 1, id=new_id("evt", region), occurred_at=(at or utcnow()).astimezone(UTC),
        actor=actor, action=action, target_id=target_id, request_id=request_id, client_ip=ip,
        prev_hash=bytes(head.hash), hash=b"",
    )
    digest = event_hash(region, event)
    await session.execute(insert(_events).values(
        seq=event.seq, id=event.id, occurred_at=event.occurred_at, actor=actor, action=action,
        target_id=target_id, request_id=request_id, client_ip=ip, prev_hash=event.prev_hash,
        hash=digest,
    ))
    moved = await session.execute(
        update(_head).where(_head.c.id == 1, _head.c.seq == head.seq)
        .values(seq=event.seq, hash=digest)
    )
    if getattr(moved, "rowcount", 1) != 1:  # the lock makes this unreachable; say so loudly
        raise RuntimeError("audit head moved while locked")
    return replace(event, hash=digest)


def _check(actor: str, action: str, target_id: str | None, request_id: str | None) -> None:
    if actor not in SYSTEM_ACTORS:
        try:
            kind = parse_id(actor).kind
        except InvalidId:
            kind = None
        if kind not in ("app", "usr", "opr"):
            raise AuditValueRejected(
                "audit actor must be an application, user or operator id, or one of "
                + ", ".join(sorted(SYSTEM_ACTORS))
            )
    if len(action) > 64 or not _ACTION.fullmatch(action):
        raise AuditValueRejected("audit action must be a dotted lowercase code, e.g. user.erased")
    if target_id is not None:
        try:
            parse_id(target_id)
        except InvalidId:
            raise AuditValueRejected("audit target must be an id issued by the gateway") from None
    if request_id is not None and not is_request_id(request_id):
        raise AuditValueRejected("audit request id must be a req_ id or a UUID")


def _ip(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise AuditValueRejected("audit client_ip must be an IP address") from None


@dataclass(frozen=True, slots=True)
class ChainReport:
    """What :func:`verify` found; ``problem`` names the first broken link."""

    region: str
    events: int
    head_seq: int
    broken_seq: int | None = None
    broken_id: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


async def verify(engine: AsyncEngine, region: str) -> ChainReport:
    """Walk the region's chain in one consistent snapshot and report the first break."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(isolation_level="REPEATABLE READ")
        head = (await conn.execute(select(_head.c.seq, _head.c.hash))).one()
        prev_seq, prev_hash, count = 0, GENESIS, 0
        while True:
            rows = (await conn.execute(
                select(_events).where(_events.c.seq > prev_seq)
                .order_by(_events.c.seq).limit(_CHUNK)
            )).all()
            for row in rows:
                event = AuditRecord(
                    row.seq, row.id, row.occurred_at, row.actor, row.action, row.target_id,
                    row.request_id, row.client_ip, bytes(row.prev_hash), bytes(row.hash),
                )
                problem = _link_problem(region, event, prev_seq, prev_hash, head.seq)
                if problem:
                    return ChainReport(region, count, head.seq, event.seq, event.id, problem)
                prev_seq, prev_hash, count = event.seq, event.hash, count + 1
            if len(rows) < _CHUNK:
                break
    if prev_seq != head.seq or prev_hash != bytes(head.hash):
        return ChainReport(
            region, count, head.seq, head.seq, None,
            f"the head names event seq {head.seq} but the chain ends at seq {prev_seq}: "
            "events were deleted from the end, or the head was altered",
        )
    return ChainReport(region, count, head.seq)


def _link_problem(
    region: str, event: AuditRecord, prev_seq: int, prev_hash: bytes, head_seq: int
) -> str | None:
    if event.seq > head_seq:
        return f"event lies beyond the head (seq {head_seq}): appended without the chain lock"
    if event.seq != prev_seq + 1:
        return f"events {prev_seq + 1}..{event.seq - 1} are missing (deleted)"
    if event.prev_hash != prev_hash:
        return f"prev_hash does not match the hash of event seq {prev_seq}"
    if event_hash(region, event) != event.hash:
        return "its contents do not match its hash: the event was altered"
    return None
