"""Region-pinned persistence: engines, the router, the residency guard, migrations.

What the rest of the gateway imports from here is listed in ``__all__``.
"""

from aggregator.store.changes import (
    Changes,
    change_rows_since,
    changes_since,
    take_change_seqs,
)
from aggregator.store.quick import QuickReader
from aggregator.store.residency import RegionSession
from aggregator.store.router import RegionRouter
from aggregator.store.schema import current_revision, head_revision, require_head, upgrade

__all__ = [
    "Changes",
    "QuickReader",
    "RegionRouter",
    "RegionSession",
    "change_rows_since",
    "changes_since",
    "current_revision",
    "head_revision",
    "require_head",
    "take_change_seqs",
    "upgrade",
]
