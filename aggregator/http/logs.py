"""Structured JSON logs that carry the request id and never a credential.

The request id lives in a context variable set by
:class:`~aggregator.http.middleware.RequestIdMiddleware`; contexts follow ``await`` and
``asyncio.to_thread``, so a line logged by a store call or a key-provider thread still
names its request. :class:`RequestIdFilter` copies it onto every record; attach it to
*handlers* (a logger's filters see only records created on that very logger).

Credentials are scrubbed twice: the connectors' :class:`~connectors.RedactingFilter`
rewrites messages and tracebacks (library loggers included, via
:func:`~connectors.install_redaction`), and :class:`JsonFormatter` runs the same
:func:`~connectors.redact` over each finished line, which also covers structured fields.
Log lines name routes by their template (``/v1/users/{id}``), never raw paths or
queries; uvicorn's own access log is switched off for that reason (a Link page path
holds a bearer token).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any, TextIO

from connectors import install_redaction, redact

_request_id: ContextVar[str | None] = ContextVar("aggregator_request_id", default=None)

#: Loggers whose records may carry request data; redaction is attached to each by name.
GATEWAY_LOGGERS = ("aggregator", "uvicorn", "starlette", "sqlalchemy")


def current_request_id() -> str | None:
    return _request_id.get()


def bind_request_id(request_id: str) -> Token[str | None]:
    return _request_id.set(request_id)


def unbind_request_id(token: Token[str | None]) -> None:
    _request_id.reset(token)


class RequestIdFilter(logging.Filter):
    """Stamps ``record.request_id`` (``None`` outside a request); never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, ``request_id``.

    Structured values go in ``extra={"fields": {...}}`` and are merged into the object::

        log.info("request", extra={"fields": {"route": "/v1/users/{id}", "status": 200}})
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or current_request_id(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update({k: v for k, v in fields.items() if k not in line})
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        return redact(json.dumps(line, default=str, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    """One readable line per record, for a developer's terminal.

    ``12:00:01 INFO  aggregator.worker.refresh  refreshed  connection=con_eu_… [req_…]``;
    the same fields as :class:`JsonFormatter`, and the same redaction over the whole line.
    """

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC).strftime("%H:%M:%S")
        parts = [stamp, f"{record.levelname:<7}", record.name, " " + record.getMessage()]
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            parts.extend(f"{k}={v}" for k, v in fields.items() if v is not None)
        request_id = getattr(record, "request_id", None) or current_request_id()
        if request_id:
            parts.append(f"[{request_id}]")
        line = " ".join(parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return redact(line)


#: ``--log-format`` choices; ``None`` (auto) means console on a terminal, else JSON.
LOG_FORMATS = ("console", "json")

#: Libraries whose INFO lines are noise to an operator (alembic's "Context impl" on every
#: start; httpx's request line, which would print full URLs, webhook queries included).
QUIET_LOGGERS = ("alembic", "httpx", "httpcore")


def configure_logging(level: str = "INFO", stream: TextIO | None = None,
                      log_format: str | None = None) -> logging.Handler:
    """Send every log record to ``stream`` (stderr); returns the handler.

    ``log_format`` is ``"json"`` (one object per line, for collectors), ``"console"``
    (readable lines) or ``None``: console when ``stream`` is a terminal, JSON otherwise.
    """
    out = stream or sys.stderr
    if log_format is None:
        log_format = "console" if _is_terminal(out) else "json"
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(out)
    handler.setFormatter(ConsoleFormatter() if log_format == "console" else JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    install_redaction(GATEWAY_LOGGERS)  # after the handler exists, so it is covered too
    return handler


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
