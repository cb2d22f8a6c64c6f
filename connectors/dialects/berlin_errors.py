"""NextGenPSD2 error answers ("Additional Error Information", ``tppMessages``), mapped once.

Implementation Guidelines v1.3.x list the codes an account-information call may answer
with; the ones that change what the gateway does:

- ``CONSENT_EXPIRED`` (401), ``CONSENT_UNKNOWN`` (400/403): the consent is dead →
  :class:`~connectors.errors.ConsentInvalid` (the connection needs the user again);
- ``CONSENT_INVALID`` (401): the consent is not valid *for this resource* — or was
  revoked; only its status tells, so it stays a :class:`BankProtocolError` here and the
  sync asks the consent's status (aggregator/sync/consents.py);
- ``ACCESS_EXCEEDED`` (429): ``frequencyPerDay`` is spent → :class:`AccessExceeded`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta

import httpx

from connectors.errors import (
    BankProtocolError,
    BankUnavailable,
    ConsentInvalid,
    ResourceNotOffered,
    ResourceNotPermitted,
)

from .base import parse_retry_after

__all__ = ["AccessExceeded", "raise_for_tpp_messages", "tpp_codes"]

#: ``tppMessages`` codes that say the consent itself is dead (v1.3.x error codes, AIS).
_DEAD_CODES: Mapping[str, str] = {
    "CONSENT_EXPIRED": "expired",
    "CONSENT_UNKNOWN": "unknown",
}
_MAX_CODES = 5


class AccessExceeded(BankUnavailable):
    """429 ``ACCESS_EXCEEDED``: the consent's ``frequencyPerDay`` is spent for today.

    ``reset_at`` is when the bank counts afresh: ``Retry-After`` where it sends one, else
    the next midnight UTC (the guidelines count "per day"). The sync budget ledger is
    then exhausted until that moment, so no retry reaches the bank before it.
    """

    code = "access_exceeded"

    def __init__(self, message: str, reset_at: datetime) -> None:
        self.reset_at = reset_at
        super().__init__(message, max(0.0, (reset_at - datetime.now(UTC)).total_seconds()))


def tpp_codes(response: httpx.Response) -> list[str]:
    """The ``code`` of each ``tppMessages`` entry (at most a few; never the free text)."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return []
    messages = body.get("tppMessages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return []
    codes = [m.get("code") for m in messages[:_MAX_CODES] if isinstance(m, dict)]
    return [c[:40] for c in codes if isinstance(c, str) and c.isascii()]


def _next_midnight(now: datetime) -> datetime:
    return datetime.combine(now.date() + timedelta(days=1), time(), UTC)


def raise_for_tpp_messages(response: httpx.Response, where: str) -> None:
    """Raise the connector error a non-2xx NextGenPSD2 answer means; return on 2xx.

    ``where`` names the method, path, status and request id (as the dialects' shared
    GET writes it); messages add the ``tppMessages`` codes, never the body's text.
    """
    status = response.status_code
    if 200 <= status < 300:
        return
    if 300 <= status < 400:
        raise BankProtocolError(f"{where}: unexpected status")  # never followed
    codes = tpp_codes(response)
    named = f"{where} [{','.join(codes) or 'no tppMessages'}]"
    if "ACCESS_EXCEEDED" in codes:
        now = datetime.now(UTC)
        delay = parse_retry_after(response.headers.get("Retry-After"), now)
        reset = now + timedelta(seconds=delay) if delay else _next_midnight(now)
        raise AccessExceeded(f"{named}: frequencyPerDay spent", reset)
    for code, state in _DEAD_CODES.items():
        if code in codes:
            raise ConsentInvalid(f"{named}: the consent is {state}", state)
    if status == 501:  # RFC 9110 §15.6.2: not a failure that a retry would cure
        raise ResourceNotOffered(f"{named}: the bank does not offer this resource")
    if status == 429 or status >= 500:
        retry = parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
        raise BankUnavailable(f"{named}: the bank is failing or asks us to back off", retry)
    # CONSENT_INVALID also means "valid, but not for this resource": the consent's status
    # tells the two apart (aggregator/sync/consents.py asks for it).
    if status == 401:
        raise BankProtocolError(f"{named}: the bank refused the access token or consent")
    if status == 403:  # a ResourceNotPermitted is a BankProtocolError: the status check holds
        raise ResourceNotPermitted(f"{named}: the consent does not permit this resource")
    if status == 404:
        raise ResourceNotOffered(f"{named}: the bank does not offer this resource")
    raise BankProtocolError(f"{named}: unexpected status")


