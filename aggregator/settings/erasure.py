"""``[erasure]``: the deadline a new erasure request is given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aggregator.settings.env import Origins
from aggregator.settings.values import days, reject_unknown

#: GDPR Art. 12(3): one month, extendable; CCPA §1798.130(a)(2): 45 days.
DEFAULT_DEADLINE_DAYS = 30


def deadline_days(raw: Mapping[str, Any], origins: Origins) -> int:
    """``[erasure] deadline_days``: 1 to 3650 (ten years is a typo guard, not a policy)."""
    reject_unknown(raw, frozenset({"deadline_days"}), origins.source, "erasure.")
    return days(raw.get("deadline_days", DEFAULT_DEADLINE_DAYS),
                origins.of("erasure", "deadline_days"), maximum=3650)
