"""Suite-wide rules.

Under CI (``CI`` set) a skipped test that needs a real component fails the run: a green
build that silently skipped the PostgreSQL, HSM, Vault, browser or interop tests would
prove nothing about them. The same holds for the atheris fuzz harnesses, and for Redis,
which serves the rate limiter's optional store.
"""

from __future__ import annotations

import os

import pytest

REAL_COMPONENT_MARKERS = ("postgres", "hsm", "transit", "browser", "interop", "redis", "fuzz")

_skipped_real: list[str] = []


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
