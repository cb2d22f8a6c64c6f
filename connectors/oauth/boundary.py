"""The one place where httpx's and authlib's exceptions become connector errors.

Modelled on httpx's ``map_httpcore_exceptions()``: code above this boundary sees only
:class:`~connectors.errors.ConnectorError` subclasses. Messages name the bank and the
operation, the HTTP status and the registered OAuth error code, never a token, code,
verifier or secret, and never a bank's free-text ``error_description`` (which may echo
request parameters).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
from authlib.integrations.base_client import OAuthError

from connectors.dialects import parse_retry_after
from connectors.errors import (
    MISCONFIGURATIONS,
    BankMisconfigured,
    BankProtocolError,
    BankUnavailable,
    ConnectorError,
    GrantRevoked,
)

__all__ = ["error_code", "map_bank_errors", "oauth_error", "raise_for_unavailable"]

# RFC 6749 §5.2: error codes are %x20-21 / %x23-5B / %x5D-7E.
_ERROR_CODE = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,64}")
#: Error codes meaning "try again later" whatever the HTTP status (RFC 6749 §4.1.2.1).
_UNAVAILABLE_CODES = frozenset({"temporarily_unavailable", "server_error", "slow_down"})


def error_code(value: object) -> str:
    """A bank-supplied OAuth error code, safe to put in a message."""
    if isinstance(value, str) and _ERROR_CODE.fullmatch(value):
        return value
    return "(malformed error code)"


def retry_after(response: httpx.Response) -> float | None:
    return parse_retry_after(response.headers.get("Retry-After"), datetime.now(UTC))


def raise_for_unavailable(response: httpx.Response, bank: str, operation: str) -> None:
    """Raise :class:`BankUnavailable` for 429 and 5xx, honouring ``Retry-After``."""
    status = response.status_code
    if status == 429 or status >= 500:
        raise BankUnavailable(
            f"{bank}: {operation}: HTTP {status}", retry_after=retry_after(response)
        )


def oauth_error(error: object, bank: str, operation: str) -> ConnectorError:
    """The connector error for an OAuth error response (RFC 6749 §5.2)."""
    code = error_code(error)
    message = f"{bank}: {operation}: the bank answered {code!r}"
    if code == "invalid_grant":
        return GrantRevoked(message)
    if code in _UNAVAILABLE_CODES:
        return BankUnavailable(message)
    if (reason := _MISCONFIGURED.get(code)) is not None:
        return BankMisconfigured(message, reason=reason, setting=MISCONFIGURATIONS[reason])
    return BankProtocolError(message)


#: OAuth error codes (RFC 6749 §4.1.2.1, §5.2; RFC 9126 §2.3: ``invalid_redirect_uri``) that
#: mean our client registration or profile is wrong, not the user's grant or an outage.
_MISCONFIGURED = {
    "invalid_client": "invalid_client",
    "unauthorized_client": "unauthorized_client",
    "invalid_scope": "invalid_scope",
    "invalid_redirect_uri": "redirect_uri_mismatch",
    "redirect_uri_mismatch": "redirect_uri_mismatch",
}


@contextlib.contextmanager
def map_bank_errors(bank: str, operation: str) -> Iterator[None]:
    """Convert failures of one outbound call; connector errors pass through unchanged."""
    try:
        yield
    except ConnectorError:
        raise
    except httpx.TimeoutException as exc:
        raise BankUnavailable(f"{bank}: {operation}: timed out") from exc
    except httpx.HTTPStatusError as exc:
        raise_for_unavailable(exc.response, bank, operation)
        raise BankProtocolError(
            f"{bank}: {operation}: unexpected HTTP {exc.response.status_code}"
        ) from exc
    except httpx.TransportError as exc:
        raise BankUnavailable(f"{bank}: {operation}: {type(exc).__name__}") from exc
    except OAuthError as exc:
        # `from None`: authlib's message carries the bank's free-text description.
        raise oauth_error(exc.error, bank, operation) from None
    except ValueError as exc:  # authlib: a token answer that is not a JSON object
        raise BankProtocolError(f"{bank}: {operation}: malformed answer") from exc
