"""Scrub credentials out of log records before any handler formats them.

Our own code never logs a token, but libraries do: authlib's web-client integration logs
the PKCE verifier at DEBUG, httpcore's DEBUG trace prints response headers, including
a bank's ``Location: …?code=…`` redirect, and httpx logs every request's full URL at
INFO (an application's webhook URL may carry a secret in its path or query): URLs are
reduced to their origin. The filter rewrites such records in place.

Python consults a logger's filters only for records created on that very logger, not for
records propagating from its children; :func:`install_redaction` therefore attaches the
filter to each library logger by name (creating authlib's ahead of its modules' import),
to the root logger and to the root logger's handlers.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from importlib.util import find_spec
from pathlib import Path
from typing import Final

import httpx

__all__ = ["RedactingFilter", "install_redaction", "redact"]

REDACTED: Final = "[REDACTED]"

# Names whose value is a credential wherever they appear: `name=value`, `name: value`,
# `'name': 'value'`, `"name": "value"`.
_CREDENTIAL_NAMES = (
    "access_token",
    "refresh_token",
    "id_token",
    "code_verifier",
    "client_secret",
    "client_assertion",
    "subject_token",
    "device_code",
    "password",
)
# Short names that are ordinary words in prose ("error code: 400"); redact them only in
# URL or form syntax (`?code=…`, `&state=…`, `code=…`) or as a quoted JSON/dict key.
_CONTEXT_NAMES = ("code", "state", "token", "nonce", "assertion")

# A value up to the next delimiter; never an earlier marker, so redacting twice is a no-op.
_VALUE = r"(?!\[REDACTED)[^\s\"'&,;)}\]>]+"
_PATTERNS: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
            re.DOTALL,
        ),
        "[REDACTED-PRIVATE-KEY]",
    ),
    # A compact JWS/JWE: base64url JSON header starting with '{"' (eyJ), then segments.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]*){2,4}"), "[REDACTED-JWT]"),
    # `?+` is possessive: a scheme word already matched is never re-read as the value.
    (
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=,]\s*(?:b?[\"'])?"
            r"(?:(?:basic|bearer|dpop|mac|digest)\s+)?+)" + _VALUE
        ),
        r"\1" + REDACTED,
    ),
    (
        re.compile(
            r"(?i)(\b(?:"
            + "|".join(_CREDENTIAL_NAMES)
            + r")\b[\"']?\s*[:=]\s*(?:b?[\"'])?)"
            + _VALUE
        ),
        r"\1" + REDACTED,
    ),
    (
        re.compile(r"(?i)((?:^|[?&#\s(,;])(?:" + "|".join(_CONTEXT_NAMES) + r")=)" + _VALUE),
        r"\1" + REDACTED,
    ),
    (
        re.compile(r"(?i)([\"'](?:" + "|".join(_CONTEXT_NAMES) + r")[\"']\s*:\s*[\"']?)" + _VALUE),
        r"\1" + REDACTED,
    ),
)


def redact(text: str) -> str:
    """Return `text` with every recognisable credential replaced by a marker.

    It is a heuristic, used as defence in depth: code must still not log secrets.
    """
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites a record's message, exception and stack text.

    It never drops a record: losing a log line hides incidents, a marker does not::

        handler.addFilter(RedactingFilter())
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(isinstance(a, httpx.URL) for a in record.args):
            record.args = tuple(_origin(a) if isinstance(a, httpx.URL) else a
                                for a in record.args)
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format: keep the template, drop the arguments
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _origin(url: httpx.URL) -> str:
    """Only the origin of a URL a library logs (httpx's ``HTTP Request: POST <url>``).

    Paths and queries carry credentials the patterns above cannot recognise: an
    application's webhook URL may hold a token in its path or query
    (``https://hooks.example/T0/B1/XXXX``), a bank's account path names an account.
    """
    port = f":{url.port}" if url.port is not None else ""
    return f"{url.scheme}://{url.host}{port}/…"


#: Loggers of the libraries that handle our credentials; children are included.
LIBRARY_LOGGERS: Final = ("authlib", "httpx", "httpcore", "connectors")

_FILTER: Final = RedactingFilter()
_lock = threading.Lock()
_module_loggers_created = False


def install_redaction(extra_loggers: Iterable[str] = ()) -> RedactingFilter:
    """Attach the shared :class:`RedactingFilter` where library records are created.

    Idempotent and cheap to repeat; call it again after adding handlers to the root
    logger so they are covered too. `BankOAuthClient` calls it on construction.
    Returns the filter so callers can attach it to handlers of their own.
    """
    global _module_loggers_created
    with _lock:
        if not _module_loggers_created:
            # Create authlib's per-module loggers now, so modules imported later (each
            # calling getLogger(__name__)) receive a logger that already filters.
            for name in _module_names("authlib"):
                logging.getLogger(name)
            _module_loggers_created = True
        prefixes = (*LIBRARY_LOGGERS, *extra_loggers)
        targets: list[logging.Filterer] = [logging.getLogger(p) for p in prefixes]
        for name, logger in list(logging.Logger.manager.loggerDict.items()):
            if isinstance(logger, logging.Logger) and name.startswith(
                tuple(f"{p}." for p in prefixes)
            ):
                targets.append(logger)
        root = logging.getLogger()
        targets.append(root)
        targets.extend(root.handlers)
        for target in targets:
            if _FILTER not in target.filters:
                target.addFilter(_FILTER)
    return _FILTER


def _module_names(package: str) -> list[str]:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    names = []
    for location in spec.submodule_search_locations:
        base = Path(location)
        for path in base.rglob("*.py"):
            parts = path.relative_to(base).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join((package, *parts)))
    return names
