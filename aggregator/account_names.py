"""Account names: sealed since issue 16, and the backfill that seals the older rows.

A bank's account name is often its holder's name (Berlin Group ``name``/``displayName``,
OBIE ``Nickname`` free text, Plaid ``name``), so it is personal data and lives sealed
under the user's data key in ``accounts.name_sealed``. Releases before kept it in clear in
``accounts.name``; that column stays (the previous release still reads it during a
rolling deploy) but is written as ``""``.

:func:`seal_clear_names` seals the clear names left by those releases, in batches, each
batch its own transaction, under each row's user's data key, and clears them; it is
resumable (it picks rows still holding a clear name) and ``aggregator migrate`` runs it
after the schema upgrade, since sealing needs the region's key provider, which an
Alembic migration does not have.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.custody import RegionCustody
from aggregator.ids import UserId
from aggregator.models import Account
from aggregator.store import RegionRouter

log = logging.getLogger(__name__)

BATCH = 500


async def account_names(
    session: AsyncSession, custody: RegionCustody, user_id: UserId,
    accounts: Sequence[Account],
) -> dict[str, str]:
    """Each account's name in clear: the sealed one, else a not-yet-backfilled clear one."""
    if not any(a.name_sealed is not None for a in accounts):
        return {a.id: a.name for a in accounts}
    key = await custody.data_keys.load(session, user_id)
    out: dict[str, str] = {}
    for account in accounts:
        opened = await custody.sealer.open_from(key, account, "name_sealed")
        out[account.id] = opened if opened is not None else account.name
    return out


async def seal_clear_names(
    router: RegionRouter, custody: RegionCustody, *, batch: int = BATCH,
    max_batches: int | None = None,
) -> int:
    """Seal every clear ``accounts.name`` of the region; returns how many were sealed."""
    done, batches = 0, 0
    while max_batches is None or batches < max_batches:
        async with router.session(custody.region) as session, session.begin():
            rows = (await session.execute(
                select(Account).where(Account.name_sealed.is_(None), Account.name != "")
                .order_by(Account.id).limit(batch).with_for_update(skip_locked=True)
            )).scalars().all()
            if not rows:
                break
            keys = await custody.data_keys.load_many(session, {r.user_id for r in rows})
            for account in rows:
                key = keys.get(account.user_id)
                if key is not None:  # an erased user's rows are going away with the user
                    await custody.sealer.seal_into(key, account, "name_sealed", account.name,
                                                   session=session)
                account.name = ""
            done += len(rows)
        batches += 1
    if done:
        log.info("region %s: sealed %d clear account names", custody.region, done)
    return done
