"""Account names are sealed; the backfill seals what earlier releases stored in clear."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from aggregator.account_names import account_names, seal_clear_names
from aggregator.custody import RegionCustody
from aggregator.ids import new_id
from aggregator.models import Account, AccountType
from aggregator.store import RegionRouter
from tests.aggregator._factories import LinkFactory
from vault import VaultError


async def test_clear_names_are_sealed_in_batches_under_each_users_key_and_still_read(
    make_linked: LinkFactory, region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> None:
    keys = custody["eu"]
    names: dict[str, str] = {}
    users = [await make_linked("eu") for _ in range(2)]
    for n, linked in enumerate(users):  # rows as a release before the sealing wrote them
        async with region_router.session("eu") as session, session.begin():
            for i in range(2):
                account = Account(
                    id=new_id("acc", "eu"), connection_id=linked.connection.id,
                    user_id=linked.user.id, bank_account_id=f"b-{n}-{i}",
                    name=f"Erika Mustermann {n}.{i}", type=AccountType.SAVINGS,
                    currency="EUR",
                )
                session.add(account)
                names[account.id] = account.name
        names[linked.account.id] = linked.account.name

    assert await seal_clear_names(region_router, keys, batch=2, max_batches=1) == 2
    assert await seal_clear_names(region_router, keys, batch=2) == 4  # resumes
    assert await seal_clear_names(region_router, keys, batch=2) == 0

    async with region_router.reader("eu") as session:
        rows = (await session.execute(select(Account))).scalars().all()
        assert {r.name for r in rows} == {""}  # nothing left in clear
        assert all(r.name_sealed is not None for r in rows)
        opened: dict[str, str] = {}
        for linked in users:
            mine = [r for r in rows if r.user_id == linked.user.id]
            opened |= await account_names(session, keys, linked.user.id, mine)
        # Sealed under the row's own user's key: another user's key does not open it.
        other = await keys.data_keys.load(session, users[1].user.id)
        theirs = next(r for r in rows if r.user_id == users[0].user.id)
    assert opened == names
    with pytest.raises(VaultError):
        await keys.sealer.open_from(other, theirs, "name_sealed")
