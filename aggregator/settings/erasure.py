"""``[erasure]``: the deadline a new erasure request is given, and how many revocation
calls the erasure job may have in flight (aggregator/erasure/revocation.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aggregator.errors import ConfigError
from aggregator.settings.env import Origins
from aggregator.settings.values import days, reject_unknown

#: GDPR Art. 12(3): one month, extendable; CCPA §1798.130(a)(2): 45 days.
DEFAULT_DEADLINE_DAYS = 30
#: Revocations in flight at one bank ("a few": a bank's rate limit answers a burst with
#: 429), and over all banks, per gateway or worker process.
DEFAULT_REVOKE_PER_BANK = 4
DEFAULT_REVOKE_CONCURRENCY = 16
_KEYS = frozenset({"deadline_days", "revoke_per_bank", "revoke_concurrency"})


def deadline_days(raw: Mapping[str, Any], origins: Origins) -> int:
    """``[erasure] deadline_days``: 1 to 3650 (ten years is a typo guard, not a policy)."""
    reject_unknown(raw, _KEYS, origins.source, "erasure.")
    return days(raw.get("deadline_days", DEFAULT_DEADLINE_DAYS),
                origins.of("erasure", "deadline_days"), maximum=3650)


def revocation_bounds(raw: Mapping[str, Any], origins: Origins) -> tuple[int, int]:
    """``[erasure] revoke_per_bank`` (1 to 32) and ``revoke_concurrency`` (1 to 256, at
    least ``revoke_per_bank``)."""
    per_bank = _calls(raw.get("revoke_per_bank", DEFAULT_REVOKE_PER_BANK),
                      origins.of("erasure", "revoke_per_bank"), 32)
    total = _calls(raw.get("revoke_concurrency", DEFAULT_REVOKE_CONCURRENCY),
                   origins.of("erasure", "revoke_concurrency"), 256)
    if total < per_bank:
        raise ConfigError(f"{origins.of('erasure', 'revoke_concurrency')} must be at least "
                          f"revoke_per_bank ({per_bank}), not {total}")
    return per_bank, total


def _calls(value: Any, where: str, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ConfigError(f"{where} must be a whole number of calls from 1 to {maximum}, "
                          f"not {value!r}")
    return value
