"""PendingAuthorization: what the gateway stores between redirect and callback."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors import PendingAuthorization

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_caller_supplied_state_is_kept() -> None:
    state = "sta_eu_" + "a" * 52
    pending = PendingAuthorization.new(
        "bank", "http://127.0.0.1/cb", with_nonce=False, now=NOW, state=state
    )
    assert pending.state == state


@pytest.mark.parametrize("weak", ["", "short", "x" * 42, "sta eu " + "a" * 50, "é" * 50])
def test_weak_or_unsafe_caller_state_is_refused(weak: str) -> None:
    with pytest.raises(ValueError, match="state must be"):
        PendingAuthorization.new("bank", "http://127.0.0.1/cb", with_nonce=False, now=NOW,
                                 state=weak)


def test_generated_state_is_fresh_and_strong() -> None:
    states = {
        PendingAuthorization.new("b", "http://127.0.0.1/cb", with_nonce=False, now=NOW).state
        for _ in range(50)
    }
    assert len(states) == 50
    assert all(len(s) >= 43 for s in states)
