"""``[worker]``: what the background jobs of ``aggregator worker`` are tuned by."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aggregator.settings.env import Origins
from aggregator.settings.values import days, reject_unknown


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """``[worker]``: what the background jobs of ``aggregator worker`` are tuned by."""

    #: Days before a consent ends that ``connection.consent_expiring`` is sent (once).
    consent_warning_days: int = 7


def worker_settings(raw: Mapping[str, Any], origins: Origins) -> WorkerSettings:
    reject_unknown(raw, frozenset({"consent_warning_days"}), origins.source, "worker.")
    warning = days(raw.get("consent_warning_days", 7),
                   origins.of("worker", "consent_warning_days"), maximum=90)
    return WorkerSettings(consent_warning_days=warning)
