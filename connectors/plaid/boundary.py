"""The one place where plaid-python's exceptions become connector errors.

Like httpx's ``map_httpcore_exceptions()``: code above this boundary sees only
:class:`~connectors.errors.ConnectorError` subclasses. Plaid's error body carries
``error_type`` and ``error_code`` (both upper-case codes, safe to log) and free text
(``error_message``, ``display_message``) that may echo request values: only the codes
and the HTTP status ever reach a message. Never the access token, public token, secret.

================================================  =======================================
Plaid answer                                      connector error
================================================  =======================================
``ITEM_LOGIN_REQUIRED``                           :class:`ItemLoginRequired`
``TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION``  :class:`MutationDuringPagination`
HTTP 429, ``RATE_LIMIT_EXCEEDED``, HTTP 5xx,      :class:`BankUnavailable`
``API_ERROR``, ``INSTITUTION_ERROR``, transport
anything else                                     :class:`BankProtocolError`
================================================  =======================================
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from typing import Any

import urllib3.exceptions
from plaid import ApiException
from plaid.exceptions import OpenApiException

from connectors.errors import BankProtocolError, BankUnavailable, ConnectorError, ItemLoginRequired

__all__ = ["MutationDuringPagination", "PlaidFailure", "map_plaid_errors", "plaid_failure"]

_CODE = re.compile(r"[A-Z0-9_]{1,64}")
_UNAVAILABLE_TYPES = frozenset({"RATE_LIMIT_EXCEEDED", "API_ERROR", "INSTITUTION_ERROR"})


class MutationDuringPagination(BankUnavailable):
    """Plaid's data changed while a ``/transactions/sync`` pagination was running.

    Plaid's documented recovery is to restart the pagination from the cursor of the
    first page; :meth:`PlaidConnector.sync_transactions` does so a bounded number of
    times and lets this escape (a retryable :class:`BankUnavailable`) only after that.
    """

    code = "plaid_mutation_during_pagination"


class PlaidFailure:
    """The safe-to-log parts of a Plaid error answer."""

    __slots__ = ("error_code", "error_type", "status")

    def __init__(self, status: int | None, error_type: str, error_code: str) -> None:
        self.status = status
        self.error_type = error_type
        self.error_code = error_code


def _code(value: object) -> str:
    return value if isinstance(value, str) and _CODE.fullmatch(value) else "UNKNOWN"


def plaid_failure(exc: ApiException) -> PlaidFailure:
    """Parse Plaid's error body (``error_type``, ``error_code``), tolerating garbage."""
    body: Any = None
    raw = getattr(exc, "body", None)
    if isinstance(raw, bytes | str):
        with contextlib.suppress(ValueError):
            body = json.loads(raw)
    if not isinstance(body, dict):
        body = {}
    status = exc.status if isinstance(exc.status, int) else None
    return PlaidFailure(status, _code(body.get("error_type")), _code(body.get("error_code")))


def _convert(failure: PlaidFailure, where: str) -> ConnectorError:
    message = (
        f"{where}: Plaid answered {failure.error_type}/{failure.error_code}"
        f" (HTTP {failure.status})"
    )
    if failure.error_code == "ITEM_LOGIN_REQUIRED":
        return ItemLoginRequired(message)
    if failure.error_code == "TRANSACTIONS_SYNC_MUTATION_DURING_PAGINATION":
        return MutationDuringPagination(message)
    status = failure.status or 0
    if status == 429 or status >= 500 or failure.error_type in _UNAVAILABLE_TYPES:
        return BankUnavailable(message)
    return BankProtocolError(message)


@contextlib.contextmanager
def map_plaid_errors(region: str, operation: str) -> Iterator[None]:
    """Convert failures of one plaid-python call; connector errors pass through unchanged."""
    where = f"plaid {region}: {operation}"
    try:
        yield
    except ConnectorError:
        raise
    except ApiException as exc:
        raise _convert(plaid_failure(exc), where) from exc
    except urllib3.exceptions.HTTPError as exc:
        # Timeouts, refused connections, TLS failures: the transport never got an answer.
        raise BankUnavailable(f"{where}: {type(exc).__name__}") from exc
    except OpenApiException as exc:
        # plaid-python could not map the answer onto its model: Plaid broke the shape.
        raise BankProtocolError(f"{where}: the answer does not match Plaid's schema") from exc
