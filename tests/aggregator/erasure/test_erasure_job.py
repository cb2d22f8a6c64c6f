"""The erasure job: complete, counted, shredded, resumable after a crash at any step."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from aggregator.custody import RegionCustody
from aggregator.datakeys import dek_id_for
from aggregator.erasure import (
    ErasureConfig,
    find_request,
    request_erasure,
    resume_pending,
    steps,
    user_digest,
    user_tables,
)
from aggregator.erasure.revocation import revoke_pending
from aggregator.erasure.steps import connection_tables
from aggregator.ids import ApplicationId
from aggregator.models import (
    Connection,
    DataKeyRecord,
    ErasureRequest,
    ErasureState,
    PlaidWebhookEvent,
    User,
    WebhookStatus,
    metadata,
    sealed_columns,
)
from aggregator.models.base import table_of, utcnow
from aggregator.sealing import field_of
from aggregator.store import RegionRouter
from tests.aggregator._factories import Linked, LinkFactory, TransactionFactory
from tests.aggregator.erasure.conftest import FAST, FakeBanks, JobFactory, rows_mentioning
from vault import DataKeyDestroyed, Envelope, KekVersionRetired, WrappedKey


class Crash(BaseException):
    """A process dying right after a step committed (not an error the job handles)."""


async def _user_with_data(
    make_linked: LinkFactory, add_transaction: TransactionFactory, n: int = 3
) -> Linked:
    linked = await make_linked("eu", refresh_token="rt-erase-me")
    for i in range(n):
        await add_transaction(linked, description=f"Rent {i}", counterparty="Landlord Ltd")
    return linked


async def _request(
    router: RegionRouter, custody: dict[str, RegionCustody], linked: Linked,
    app_id: ApplicationId,
) -> str:
    request = await request_erasure(router, custody["eu"], linked.user.id, app_id,
                                    config=FAST, actor=app_id)
    assert request is not None
    return request.id


async def _load(router: RegionRouter, request_id: str) -> ErasureRequest:
    async with router.reader("eu") as session:
        found = await session.get(ErasureRequest, request_id)
    assert found is not None
    return found


async def test_erasure_leaves_no_row_of_the_user_in_any_region(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, add_transaction: TransactionFactory, make_job: JobFactory,
    fake_banks: FakeBanks,
) -> None:
    linked = await _user_with_data(make_linked, add_transaction)
    bystander = await _user_with_data(make_linked, add_transaction, n=1)
    async with region_router.session("eu") as session, session.begin():
        session.add(PlaidWebhookEvent(
            body_sha256=bytes(32), region="eu", item_id="item-1",
            connection_id=linked.connection.id, webhook_type="TRANSACTIONS",
            webhook_code="SYNC_UPDATES_AVAILABLE", body="{}", signed_at=utcnow(),
            status=WebhookStatus.PENDING, available_at=utcnow(),
        ))
    assert await rows_mentioning(region_router, linked.user.id)
    request_id = await _request(region_router, custody, linked, app_id)

    assert await make_job().run(request_id) is ErasureState.COMPLETED

    assert await rows_mentioning(region_router, linked.user.id) == []
    assert await rows_mentioning(region_router, bystander.user.id)  # only the one user
    done = await _load(region_router, request_id)
    assert done.user_id is None
    assert bytes(done.user_digest) == user_digest(custody["eu"], linked.user.id)
    assert done.counts == {
        "plaid_webhook_events": 1, "outbound_events": 0,
        "transactions": 3, "balances": 0, "sync_states": 0, "sync_spends": 0,
        "sync_runs": 0, "account_resources": 0, "refresh_attempts": 0, "link_sessions": 0,
        "idempotency_keys": 0,
        "accounts": 1, "credentials": 1, "connections": 1, "data_keys": 1, "users": 1,
    }
    assert fake_banks.revoked == ["rt-erase-me"]


async def test_user_tables_cover_every_table_with_a_user_key() -> None:
    holding = {
        t.name for t in metadata.sorted_tables for c in t.columns
        if c.name == "user_id"
        or any(fk.column.table.name in ("users", "connections") for fk in c.foreign_keys)
    }
    erased = {t.name for t in user_tables()} | {t.name for t, _ in connection_tables()}
    assert holding - {"erasure_requests"} == erased | {"data_keys"}

async def test_a_dump_taken_before_erasure_does_not_open_afterwards(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, add_transaction: TransactionFactory, make_job: JobFactory,
) -> None:
    linked = await _user_with_data(make_linked, add_transaction)
    user_id = linked.user.id
    dump: list[tuple[Any, str]] = []  # (row, sealed column): every sealed value of the user
    async with region_router.reader("eu") as session:
        for mapper in User.registry.mappers:
            model, sealed = mapper.class_, sealed_columns(table_of(mapper.class_))
            if not sealed:
                continue
            column = model.id if model is User else model.user_id
            for row in (await session.execute(select(model).where(column == user_id))).scalars():
                dump += [(row, c.name) for c in sealed if getattr(row, c.name) is not None]
        record = (await session.execute(select(table_of(DataKeyRecord))
                                        .where(table_of(DataKeyRecord).c.user_id == user_id))
                  ).one()
    wrapped = WrappedKey(record.dek_id, record.provider, record.kek_id, record.kek_version,
                         bytes(record.ciphertext))
    assert len(dump) >= 10
    keys = custody["eu"]
    async with region_router.reader("eu") as session:
        key = await keys.data_keys.load(session, user_id)
    assert await keys.sealer.open_from(key, dump[0][0], dump[0][1])  # opens before

    await make_job().run(await _request(region_router, custody, linked, app_id))

    assert not keys.envelope.is_cached(dek_id_for(user_id))  # dropped from the cache
    for row, column in dump:
        async with region_router.reader("eu") as session:
            with pytest.raises(DataKeyDestroyed):
                await keys.data_keys.load(session, row.user_id if hasattr(row, "user_id")
                                          else user_id)
        assert field_of(row, column).subject_id == user_id
    # The dump also holds the wrapped key: it stays unwrappable until the region's KEK is
    # rotated and its minimum decryption version raised past it (README: backups).
    provider = keys.envelope.provider
    provider.rotate()
    provider.set_min_decryption_version(provider.status().latest_version)
    fresh = Envelope(provider)
    with pytest.raises(KekVersionRetired):
        fresh.prepare(wrapped)


@pytest.mark.parametrize(
    "crash_after", [ErasureState.REQUESTED, ErasureState.STOPPED, ErasureState.REVOKED]
)
async def test_a_crash_after_any_step_resumes_to_the_same_receipt(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, add_transaction: TransactionFactory, make_job: JobFactory,
    fake_banks: FakeBanks, crash_after: ErasureState,
) -> None:
    linked = await _user_with_data(make_linked, add_transaction)
    request_id = await _request(region_router, custody, linked, app_id)

    def die(state: ErasureState) -> None:
        if state is crash_after:
            raise Crash(state.value)

    if crash_after is ErasureState.REQUESTED:
        pass  # crashed before the first run
    else:
        with pytest.raises(Crash):
            await make_job(checkpoint=die).run(request_id)
        # Revocation outcomes commit per grant; the state stays at ``stopped``.
        committed = ErasureState.STOPPED if crash_after is ErasureState.REVOKED else crash_after
        assert (await _load(region_router, request_id)).state is committed
    # The dead run's lease blocks resumption until it expires.
    later = (await _load(region_router, request_id)).lease_expires_at
    done = await resume_pending(region_router, custody, fake_banks, config=FAST, now=later)

    assert done == {request_id: ErasureState.COMPLETED}
    final = await _load(region_router, request_id)
    assert final.counts is not None
    assert final.counts["transactions"] == 3
    assert sum(final.counts.values()) == 3 + 1 + 1 + 1 + 1 + 1  # txns, acc, crd, con, key, usr
    assert await rows_mentioning(region_router, linked.user.id) == []
    assert fake_banks.revoked == ["rt-erase-me"]  # revoked once, not again on resume


async def test_requesting_twice_returns_the_same_request_even_when_done(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory,
) -> None:
    linked = await make_linked("eu")
    first = await _request(region_router, custody, linked, app_id)
    assert await _request(region_router, custody, linked, app_id) == first
    await make_job().run(first)
    assert await _request(region_router, custody, linked, app_id) == first
    async with region_router.reader("eu") as session:
        found = await find_request(session, custody["eu"], linked.user.id, app_id)
    assert found is not None
    assert found.id == first


async def test_a_second_run_while_the_first_holds_the_lease_does_nothing(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory,
) -> None:
    linked = await make_linked("eu")
    request_id = await _request(region_router, custody, linked, app_id)

    def stop_early(state: ErasureState) -> None:
        if state is ErasureState.STOPPED:
            raise Crash()

    with pytest.raises(Crash):
        await make_job(checkpoint=stop_early, owner="a").run(request_id)
    assert await make_job(owner="b").run(request_id) is ErasureState.STOPPED
    assert await make_job(owner="a").run(request_id) is ErasureState.COMPLETED


def test_the_default_deadline_is_thirty_days() -> None:
    assert ErasureConfig().deadline.days == 30


@pytest.mark.parametrize(
    "left_at", [ErasureState.REVOKED, ErasureState.DELETED, ErasureState.SHREDDED]
)
async def test_a_request_an_older_release_left_midway_resumes_to_completion(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, add_transaction: TransactionFactory, make_job: JobFactory,
    fake_banks: FakeBanks, left_at: ErasureState,
) -> None:
    """Older releases committed ``revoked``, ``deleted`` and ``shredded`` separately."""
    linked = await _user_with_data(make_linked, add_transaction)
    request_id = await _request(region_router, custody, linked, app_id)

    def halt(state: ErasureState) -> None:
        if state is ErasureState.STOPPED:
            raise Crash()

    with pytest.raises(Crash):
        await make_job(checkpoint=halt).run(request_id)
    request = await _load(region_router, request_id)
    keys = custody["eu"]
    await make_job().run(request_id, now=request.lease_expires_at)  # reference run
    expected = (await _load(region_router, request_id)).counts
    assert expected is not None

    # Rebuild the midway state an older release would have committed, on a second user.
    other = await _user_with_data(make_linked, add_transaction)
    second = await _request(region_router, custody, other, app_id)
    with pytest.raises(Crash):
        await make_job(checkpoint=halt).run(second)
    request = await _load(region_router, second)
    await revoke_pending(region_router, keys, fake_banks, second, FAST)
    async with region_router.session("eu") as session, session.begin():
        counts: dict[str, int] = {}
        if left_at is not ErasureState.REVOKED:
            assert not await steps.unrevoked(session, request)
            counts = await steps.delete_rows(session, request)
        if left_at is ErasureState.SHREDDED:
            counts.update(await steps.shred(session, keys, request))
        await steps.advance(session, second, ErasureState.STOPPED, left_at, counts=counts)

    later = (await _load(region_router, second)).lease_expires_at
    assert await make_job().run(second, now=later) is ErasureState.COMPLETED
    final = await _load(region_router, second)
    assert final.counts == expected
    assert final.user_id is None
    assert await rows_mentioning(region_router, other.user.id) == []


async def test_orphaned_plaid_webhooks_naming_the_users_items_are_deleted(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory,
) -> None:
    """A webhook stored before its connection existed names the item, not the user."""
    linked = await make_linked("eu")
    bystander = await make_linked("eu")
    item, other_item = "item-erase-me-7f3a", "item-bystander-91c2"
    async with region_router.session("eu") as session, session.begin():
        for con, ref in ((linked.connection.id, item), (bystander.connection.id, other_item)):
            await session.execute(
                table_of(Connection).update().where(table_of(Connection).c.id == con)
                .values(external_ref=ref))
        for n, (ref, con_id, status) in enumerate([
            (item, linked.connection.id, WebhookStatus.APPLIED),
            (item, None, WebhookStatus.ORPHANED),
            (item, None, WebhookStatus.ORPHANED),
            (other_item, None, WebhookStatus.ORPHANED),
        ]):
            session.add(PlaidWebhookEvent(
                body_sha256=bytes([n]) * 32, region="eu", item_id=ref, connection_id=con_id,
                webhook_type="ITEM", webhook_code="ERROR", body=f'{{"item_id": "{ref}"}}',
                signed_at=utcnow(), status=status, available_at=utcnow(),
            ))
    request_id = await _request(region_router, custody, linked, app_id)

    assert await make_job().run(request_id) is ErasureState.COMPLETED

    # The generic scan, for the user's id and for every external id of the user's grants.
    for needle in (linked.user.id, item):
        assert await rows_mentioning(region_router, needle) == [], needle
    assert await rows_mentioning(region_router, other_item)  # the bystander's stay
    done = await _load(region_router, request_id)
    assert done.counts is not None
    assert done.counts["plaid_webhook_events"] == 3


async def test_a_failed_stop_step_records_its_error_and_holds_no_lease(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId,
    make_linked: LinkFactory, make_job: JobFactory,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-x")
    request_id = await _request(region_router, custody, linked, app_id)
    async with region_router.session("eu") as session, session.begin():
        await session.execute(table_of(DataKeyRecord).delete())  # the token cannot be opened
    custody["eu"].envelope.forget(dek_id_for(linked.user.id))

    with pytest.raises(DataKeyDestroyed):
        await make_job(owner="a").run(request_id)

    found = await _load(region_router, request_id)
    assert (found.state, found.last_error, found.lease_owner) == (
        ErasureState.REQUESTED, "data_key_destroyed", None)
    with pytest.raises(DataKeyDestroyed):  # another runner may try at once: no lease left
        await make_job(owner="b").run(request_id)
