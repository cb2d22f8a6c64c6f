"""Suite-wide rules.

Under CI (``CI`` set) a skipped test that needs a real component fails the run: a green
build that silently skipped the PostgreSQL, HSM, Vault, browser or interop tests would
prove nothing about them. The same holds for the atheris fuzz harnesses, and for Redis,
which serves the rate limiter's optional store.

Every test also gets the root logger and the libraries the gateway quiets back as it
found them: ``aggregator serve``/``worker`` run in-process by some tests configure
logging for the whole process, and later tests that count httpx's lines would fail
depending on the order the suite ran in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import pytest

from aggregator.http.logs import QUIET_LOGGERS

REAL_COMPONENT_MARKERS = ("postgres", "hsm", "transit", "browser", "interop", "redis", "fuzz")

_skipped_real: list[str] = []


@pytest.fixture(autouse=True)
def _logging_as_found() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    # configure_logging's own handler is a plain StreamHandler; pytest's capture handlers
    # are subclasses it adds and removes per phase, and are left to it.
    for handler in list(root.handlers):
        if type(handler) is logging.StreamHandler and handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for name, previous in quiet.items():
        logging.getLogger(name).setLevel(previous)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and any(m in report.keywords for m in REAL_COMPONENT_MARKERS):
        _skipped_real.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("CI") and _skipped_real:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if os.environ.get("CI") and _skipped_real:
        terminalreporter.section("real components skipped under CI")
        for nodeid in _skipped_real:
            terminalreporter.write_line(f"SKIPPED (fails CI): {nodeid}")
