"""Capturing log records as the JSON lines production writes, for tests that read logs."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

from aggregator.http.logs import JsonFormatter, RequestIdFilter
from connectors import install_redaction

LogLines = Callable[[], list[dict[str, Any]]]


@contextlib.contextmanager
def json_log_lines(level: int) -> Iterator[LogLines]:
    """Every record at ``level`` or above on the root logger, formatted and redacted."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level)
    install_redaction(("aggregator", "uvicorn"))
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
