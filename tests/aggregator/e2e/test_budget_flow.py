"""Rate budgets with the real sync job and sandbox bank: what each call spends."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from aggregator.account_names import account_names
from aggregator.models import Account, Balance, DataType, SyncSpend, Transaction
from tests.aggregator.e2e.conftest import Gateway


async def _ledgers(gateway: Gateway) -> dict[tuple[str, DataType, str], int]:
    async with gateway.services.router.reader("eu") as session:
        rows = await session.execute(
            select(SyncSpend.account_id, SyncSpend.data_type, SyncSpend.reason, func.count())
            .group_by(SyncSpend.account_id, SyncSpend.data_type, SyncSpend.reason)
        )
        return {(a, t, r): n for a, t, r, n in rows}


async def _accounts(gateway: Gateway) -> dict[str, str]:
    async with gateway.services.router.reader("eu") as session:
        rows = (await session.execute(select(Account))).scalars().all()
        names: dict[str, str] = {}
        for user_id in {r.user_id for r in rows}:  # names are sealed per user
            names |= await account_names(session, gateway.services.custody["eu"], user_id,
                                         [r for r in rows if r.user_id == user_id])
        return {names[r.id]: r.id for r in rows}


async def test_linking_is_free_and_a_sync_spends_the_list_and_each_account(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("eu")
    # The first sync ran with the user present: nothing spent.
    assert await _ledgers(gateway) == {}
    accounts = await _accounts(gateway)
    assert sorted(accounts) == ["Everyday", "Rainy day"]

    assert (await gateway.api.post(f"/v1/connections/{connection_id}/sync")).status_code == 200

    assert await _ledgers(gateway) == {
        ("", DataType.ACCOUNTS, "on_demand"): 1,
        **{(a, t, "on_demand"): 1 for a in accounts.values()
           for t in (DataType.ACCOUNTS, DataType.TRANSACTIONS)},
    }


async def test_an_account_the_bank_lists_for_the_first_time_is_booked_as_read(
    gateway: Gateway,
) -> None:
    _, connection_id = await gateway.link("eu")
    # Forget one account, as if the bank had only now started to list it.
    forgotten = (await _accounts(gateway))["Rainy day"]
    async with gateway.services.router.session("eu") as session, session.begin():
        await session.execute(delete(Transaction).where(Transaction.account_id == forgotten))
        await session.execute(delete(Balance).where(Balance.account_id == forgotten))
        await session.execute(delete(Account).where(Account.id == forgotten))

    assert (await gateway.api.post(f"/v1/connections/{connection_id}/sync")).status_code == 200

    accounts = await _accounts(gateway)
    reappeared, kept = accounts["Rainy day"], accounts["Everyday"]
    assert reappeared != forgotten
    # Spent up front: the list and the account we knew; booked after: the new one's read.
    assert await _ledgers(gateway) == {
        ("", DataType.ACCOUNTS, "on_demand"): 1,
        (kept, DataType.ACCOUNTS, "on_demand"): 1,
        (kept, DataType.TRANSACTIONS, "on_demand"): 1,
        (reappeared, DataType.ACCOUNTS, "first_read"): 1,
        (reappeared, DataType.TRANSACTIONS, "first_read"): 1,
    }
    # Every ledger now holds one call, so three more syncs fit and the fifth is refused.
    codes = [(await gateway.api.post(f"/v1/connections/{connection_id}/sync")).status_code
             for _ in range(4)]
    assert codes == [200, 200, 200, 429]
