"""Ids that carry their home region, so any request is routed without a global lookup.

Format::

    {kind}_{region}_{random}     usr_eu_4kq3…   regional: the row lives only in that region
    {kind}_{random}              app_7dz2…      global: the same row exists in every region

``kind`` is three lowercase letters from :data:`KINDS`, ``region`` a configured region
name (2-8 lowercase letters, as in settings) and ``random`` 128 bits from the OS CSPRNG
in lowercase RFC 4648 base32 without padding (26 characters of ``a-z2-7``). The random
part never contains ``_``, so splitting on it is unambiguous. Ids are not time-ordered on
purpose: a user id must not reveal when the user signed up.

Applications and request ids are global: an application is configuration that every
region needs to authenticate API calls (see :mod:`aggregator.applications`), and a
request id belongs to no stored entity. Everything a user owns is regional.

Secrets handed to a browser or a bank (link tokens, OAuth ``state``) come back without
any other context, so they carry their region the same way (:func:`new_secret`); only
their SHA-256 is stored (:func:`secret_digest`).
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from collections.abc import Collection
from typing import Literal, NamedTuple, NewType, overload

from aggregator.errors import MalformedId, UnknownRegion

ApplicationId = NewType("ApplicationId", str)
UserId = NewType("UserId", str)
LinkSessionId = NewType("LinkSessionId", str)
ConnectionId = NewType("ConnectionId", str)
CredentialId = NewType("CredentialId", str)
AccountId = NewType("AccountId", str)
TransactionId = NewType("TransactionId", str)
AuditEventId = NewType("AuditEventId", str)
RequestId = NewType("RequestId", str)
ErasureRequestId = NewType("ErasureRequestId", str)
OutboundEventId = NewType("OutboundEventId", str)
SyncRunId = NewType("SyncRunId", str)

OperatorId = NewType("OperatorId", str)

Kind = Literal[
    "app", "usr", "lnk", "con", "crd", "acc", "txn", "evt", "req", "era", "msg", "syn", "opr",
]

#: What each kind names; global kinds carry no region.
KINDS: dict[str, str] = {
    "app": "application (global)",
    "usr": "user",
    "lnk": "link session",
    "con": "connection",
    "crd": "credential",
    "acc": "account",
    "txn": "transaction",
    "evt": "audit event",
    "req": "request (global)",
    "era": "erasure request",
    "msg": "outbound event",  # a webhook message; Standard Webhooks ids read msg_…
    "syn": "sync run",
    "opr": "console operator (global)",  # replicated like applications: aggregator.operators
}
GLOBAL_KINDS = frozenset({"app", "req", "opr"})

_RANDOM = r"[a-z2-7]{26}"
_REGION = r"[a-z]{2,8}"
_ID = re.compile(rf"([a-z]{{3}})_(?:({_REGION})_)?({_RANDOM})")
_SECRET = re.compile(rf"([a-z]{{3}})_({_REGION})_([a-z2-7]{{52}})")
#: Any regional id, for scanning stored text (tests, audits) without knowing the column.
REGIONAL_ID = re.compile(rf"\b([a-z]{{3}})_({_REGION})_({_RANDOM})\b")


class ParsedId(NamedTuple):
    """An id's parts; ``region`` is ``None`` for a global kind."""

    kind: str
    region: str | None


def _random(nbytes: int) -> str:
    return base64.b32encode(secrets.token_bytes(nbytes)).decode("ascii").rstrip("=").lower()


def _check_region(region: str) -> None:
    if not re.fullmatch(_REGION, region):
        raise ValueError(f"region {region!r} must be 2-8 lowercase letters")


@overload
def new_id(kind: Literal["app"], region: None = None) -> ApplicationId: ...
@overload
def new_id(kind: Literal["req"], region: None = None) -> RequestId: ...
@overload
def new_id(kind: Literal["opr"], region: None = None) -> OperatorId: ...
@overload
def new_id(kind: Literal["usr"], region: str) -> UserId: ...
@overload
def new_id(kind: Literal["lnk"], region: str) -> LinkSessionId: ...
@overload
def new_id(kind: Literal["con"], region: str) -> ConnectionId: ...
@overload
def new_id(kind: Literal["crd"], region: str) -> CredentialId: ...
@overload
def new_id(kind: Literal["acc"], region: str) -> AccountId: ...
@overload
def new_id(kind: Literal["txn"], region: str) -> TransactionId: ...
@overload
def new_id(kind: Literal["evt"], region: str) -> AuditEventId: ...
@overload
def new_id(kind: Literal["era"], region: str) -> ErasureRequestId: ...
@overload
def new_id(kind: Literal["msg"], region: str) -> OutboundEventId: ...
@overload
def new_id(kind: Literal["syn"], region: str) -> SyncRunId: ...
def new_id(kind: Kind, region: str | None = None) -> str:
    """A fresh id of ``kind``; regional kinds need ``region``, global kinds refuse one."""
    if kind not in KINDS:
        raise ValueError(f"unknown id kind {kind!r}")
    if kind in GLOBAL_KINDS:
        if region is not None:
            raise ValueError(f"{KINDS[kind]} ids are global and carry no region")
        return f"{kind}_{_random(16)}"
    if region is None:
        raise ValueError(f"{KINDS[kind]} ids need a region")
    _check_region(region)
    return f"{kind}_{region}_{_random(16)}"


def parse_id(
    text: str, *, kind: str | None = None, regions: Collection[str] | None = None
) -> ParsedId:
    """Split an id from outside into kind and region, or raise a typed error.

    ``kind`` demands that kind (a connection id where a user id is expected is malformed
    for that purpose); ``regions`` demands a configured region. The message never echoes
    more than the id's shape, since callers may pass any text a client sent.
    """
    match = _ID.fullmatch(text) if isinstance(text, str) else None
    if match is None or match.group(1) not in KINDS:
        raise MalformedId("not an id issued by this gateway")
    found, region = match.group(1), match.group(2)
    if (region is None) != (found in GLOBAL_KINDS):
        raise MalformedId(f"a {KINDS[found]} id has the wrong shape")
    if kind is not None and found != kind:
        raise MalformedId(f"expected a {KINDS.get(kind, kind)} id, got a {KINDS[found]} id")
    if region is not None and regions is not None and region not in regions:
        raise UnknownRegion(f"region {region!r} is not served here")
    return ParsedId(found, region)


def region_of(text: str) -> str | None:
    """The region an id names, ``None`` for global ids; raises :class:`MalformedId`."""
    return parse_id(text).region


def new_secret(kind: str, region: str) -> str:
    """A 256-bit bearer secret that names its region (link tokens, OAuth ``state``)."""
    if not re.fullmatch(r"[a-z]{3}", kind):
        raise ValueError("secret kind must be three lowercase letters")
    _check_region(region)
    return f"{kind}_{region}_{_random(32)}"


def parse_secret(text: str, *, kind: str, regions: Collection[str] | None = None) -> str:
    """The region of a secret made by :func:`new_secret`; raises :class:`MalformedId`."""
    match = _SECRET.fullmatch(text) if isinstance(text, str) else None
    if match is None or match.group(1) != kind:
        raise MalformedId("not a secret issued by this gateway")
    region = match.group(2)
    if regions is not None and region not in regions:
        raise UnknownRegion(f"region {region!r} is not served here")
    return region


def secret_digest(secret: str) -> bytes:
    """What is stored for a high-entropy secret: SHA-256 suffices, no pepper or KDF needed."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def is_request_id(text: str) -> bool:
    """Request ids are ours (``req_…``) or a canonical UUID from the ingress."""
    if _ID.fullmatch(text) and text.startswith("req_"):
        return True
    try:
        return str(uuid.UUID(text)) == text.lower() and len(text) == 36
    except ValueError:
        return False
