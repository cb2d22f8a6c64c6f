"""Rotating one user's data key and resealing their values, resumably."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from sqlalchemy import select

from aggregator.cli import main
from aggregator.custody import RegionCustody
from aggregator.datakeys import older_than
from aggregator.models import Account, Credential, DataKeyRecord, Transaction, User
from aggregator.reseal import reseal_user
from aggregator.store import RegionRouter
from tests.aggregator._factories import LinkFactory, TransactionFactory
from vault import (
    DataKeyDestroyed,
    Envelope,
    LocalKeyringConfig,
    SealLimitReached,
    data_key_id,
)
from vault.local import LocalKeyring


async def _blob_key_ids(router: RegionRouter, user_id: str) -> set[str]:
    async with router.reader("eu") as session:
        user = await session.get(User, user_id)
        credential = (await session.execute(select(Credential))).scalar_one()
        account = (await session.execute(select(Account))).scalar_one()
        txns = (await session.execute(select(Transaction))).scalars().all()
    assert user is not None
    blobs = [user.external_id_sealed, credential.access_token_sealed,
             credential.refresh_token_sealed, account.identifier_sealed,
             account.holder_name_sealed, *(t.description_sealed for t in txns)]
    return {data_key_id(bytes(b)) for b in blobs if b is not None}


async def test_a_rotated_key_reseals_every_value_resumably_and_drops_the_old_key(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    make_linked: LinkFactory, add_transaction: TransactionFactory,
) -> None:
    linked = await make_linked("eu", refresh_token="rt-before-rotation")
    for n in range(5):
        await add_transaction(linked, description=f"Coffee {n}")
    keys = custody["eu"]
    user_id = linked.user.id
    [old_id] = await _blob_key_ids(region_router, user_id)
    baseline = await older_than(region_router, "eu", 2)  # keys below KEK version 2

    async with region_router.session("eu") as session, session.begin():
        new = await keys.data_keys.rotate(session, user_id)
    assert new.dek_id != old_id
    async with region_router.reader("eu") as session:  # old values still open meanwhile
        key = await keys.data_keys.load(session, user_id)
        credential = (await session.execute(select(Credential))).scalar_one()
    assert key.dek_id == new.dek_id
    assert await keys.sealer.open_from(key, credential, "refresh_token_sealed") == (
        "rt-before-rotation")
    assert await older_than(region_router, "eu", 2) == baseline + 1  # blocks a KEK retire

    first = await reseal_user(region_router, keys, user_id, batch=2, max_batches=2)
    assert not first.finished  # interrupted, as a crash would leave it
    assert await _blob_key_ids(region_router, user_id) == {old_id, new.dek_id}
    rest = await reseal_user(region_router, keys, user_id, batch=2)
    assert rest.finished
    assert first.resealed + rest.resealed == 10  # 1 + 2 + 2 + 5 values, each once

    assert await _blob_key_ids(region_router, user_id) == {new.dek_id}
    async with region_router.reader("eu") as session:
        record = await session.get(DataKeyRecord, user_id)
        key = await keys.data_keys.load(session, user_id)
        credential = (await session.execute(select(Credential))).scalar_one()
        descriptions = sorted([
            await keys.sealer.open_from(key, t, "description_sealed") or ""
            for t in (await session.execute(select(Transaction))).scalars()])
    assert record is not None
    assert record.previous_dek_id is None
    assert record.previous_ciphertext is None
    assert await keys.sealer.open_from(key, credential, "refresh_token_sealed") == (
        "rt-before-rotation")
    assert descriptions == [f"Coffee {n}" for n in range(5)]
    assert await older_than(region_router, "eu", 2) == baseline

    async with region_router.session("eu") as session, session.begin():  # erasure still
        assert await keys.data_keys.destroy(session, user_id)  # shreds the new key
    async with region_router.reader("eu") as session:
        with pytest.raises(DataKeyDestroyed):
            await keys.data_keys.load(session, user_id)


def test_the_seal_limit_error_names_a_command_that_exists(
    capsys: pytest.CaptureFixture[str],
) -> None:
    provider = LocalKeyring(LocalKeyringConfig(directory=Path(tempfile.mkdtemp()), kek_id="t"))
    provider.ensure_kek()
    envelope = Envelope(provider, seal_limit=64)
    key = envelope.new_data_key("dek_usr_eu_limit")
    for _ in range(64):  # the limit's worth of seals...
        envelope.seal(key, b"v", b"aad")
    with pytest.raises(SealLimitReached) as raised:  # ...and the next one is refused
        envelope.seal(key, b"v", b"aad")
    command = "aggregator keys rotate-user USER_ID"
    assert command in str(raised.value)
    with pytest.raises(SystemExit) as done:  # ...and that command exists
        main(["keys", "rotate-user", "--help"])
    assert done.value.code == 0
    assert "USER_ID" in capsys.readouterr().out
