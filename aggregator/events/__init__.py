"""Outbound events: an outbox written with each change, delivered signed to the app.

Modules: :mod:`~aggregator.events.outbox` (:func:`emit`, the payload allow-list),
:mod:`~aggregator.events.standard_webhooks` (signing), :mod:`~aggregator.events.endpoints`
(each application's URL and sealed secrets, rotation), :mod:`~aggregator.events.delivery`
(:func:`deliver_due`, leasing and retries), :mod:`~aggregator.events.hooks` (the emitters
other packages call), :mod:`~aggregator.events.replay` (listing and redelivery).
"""

from aggregator.events.delivery import SCHEDULE, DeliveryStats, deliver_due
from aggregator.events.endpoints import EndpointChange, UnsafeUrl, check_url, configure
from aggregator.events.outbox import EVENT_TYPES, check_data, emit

__all__ = [
    "EVENT_TYPES",
    "SCHEDULE",
    "DeliveryStats",
    "EndpointChange",
    "UnsafeUrl",
    "check_data",
    "check_url",
    "configure",
    "deliver_due",
    "emit",
]
