"""Sealed columns: no clear text at rest, bound to their place, found by keyed hash."""

from __future__ import annotations

import pytest
from sqlalchemy import LargeBinary, String, Text, inspect, select, text

from aggregator import sealing
from aggregator.custody import RegionCustody
from aggregator.ids import ApplicationId, TransactionId, UserId
from aggregator.models import (
    Account,
    Base,
    Credential,
    Transaction,
    User,
    metadata,
    sealed_columns,
)
from aggregator.models.base import table_of
from aggregator.sealing import Field, field_of
from aggregator.store import RegionRouter
from aggregator.users import find_user
from tests.aggregator import _factories as fixtures
from vault import AadMismatch, WrongDataKey

IBAN = "DE89370400440532013000"
SECRETS = {
    "iban": IBAN,
    "holder": "Erika Mustermann",
    "access": "at-8d3f1c0e9b7a6f5e4d3c2b1a",
    "refresh": "rt-1a2b3c4d5e6f7a8b9c0d1e2f",
    "external": "erika.mustermann@example.test",
    "description": "Rent Flat 3B Lindenstrasse",
    "counterparty": "Hausverwaltung Schmidt GmbH",
}


async def _write_known_values(
    make_linked: fixtures.LinkFactory, add_transaction: fixtures.TransactionFactory
) -> fixtures.Linked:
    linked = await make_linked(
        "eu", external_id=SECRETS["external"], iban=IBAN, holder=SECRETS["holder"],
        access_token=SECRETS["access"], refresh_token=SECRETS["refresh"],
    )
    await add_transaction(
        linked, description=SECRETS["description"], counterparty=SECRETS["counterparty"]
    )
    return linked


async def test_sealed_values_open_for_their_owner(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    make_linked: fixtures.LinkFactory, add_transaction: fixtures.TransactionFactory,
) -> None:
    linked = await _write_known_values(make_linked, add_transaction)
    eu = custody["eu"]
    async with region_router.reader("eu") as session:
        key = await eu.data_keys.load(session, linked.user.id)
        user = await session.get(User, linked.user.id)
        credential = await session.get(Credential, linked.credential.id)
        account = await session.get(Account, linked.account.id)
        txn = (await session.execute(select(Transaction))).scalar_one()
    assert user
    assert credential
    assert account
    opened = {
        "external": await eu.sealer.open_from(key, user, "external_id_sealed"),
        "access": await eu.sealer.open_from(key, credential, "access_token_sealed"),
        "refresh": await eu.sealer.open_from(key, credential, "refresh_token_sealed"),
        "iban": await eu.sealer.open_from(key, account, "identifier_sealed"),
        "holder": await eu.sealer.open_from(key, account, "holder_name_sealed"),
        "description": await eu.sealer.open_from(key, txn, "description_sealed"),
        "counterparty": await eu.sealer.open_from(key, txn, "counterparty_sealed"),
    }
    assert opened == SECRETS


async def test_no_clear_text_reaches_the_database(
    region_router: RegionRouter, make_linked: fixtures.LinkFactory,
    add_transaction: fixtures.TransactionFactory, raw_files: fixtures.RawFiles,
) -> None:
    await _write_known_values(make_linked, add_transaction)
    needles = [v.encode() for v in SECRETS.values()]
    if region_router.engine("eu").dialect.name == "sqlite":
        files = list(raw_files())
        assert any(b"Giro" in data for _, data in files)  # the files do hold the rows
        for path, data in files:
            for needle in needles:
                assert needle not in data, (path.name, needle)
        return
    seen = 0
    async with region_router.reader("eu") as session:
        for table in metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text | LargeBinary)]
            names = ", ".join(c.name for c in columns)
            for row in (await session.execute(text(f"SELECT {names} FROM {table.name}"))).all():
                for value in row:
                    raw = value.encode() if isinstance(value, str) else bytes(value or b"")
                    seen += len(raw)
                    for needle in needles:
                        assert needle not in raw, (table.name, needle)
    assert seen > 1000


async def test_a_sealed_value_copied_to_another_place_does_not_open(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    make_linked: fixtures.LinkFactory,
) -> None:
    first = await make_linked("eu", refresh_token=SECRETS["refresh"])
    other = await make_linked("eu")
    eu = custody["eu"]
    async with region_router.session("eu") as session, session.begin():
        # An attacker with write access to the database moves ciphertexts around.
        await session.execute(text(
            "UPDATE credentials SET access_token_sealed = refresh_token_sealed WHERE id = :id"
        ), {"id": first.credential.id})
        await session.execute(text(
            "UPDATE accounts SET holder_name_sealed = identifier_sealed WHERE id = :id"
        ), {"id": first.account.id})
    async with region_router.reader("eu") as session:
        key = await eu.data_keys.load(session, first.user.id)
        credential = await session.get(Credential, first.credential.id)
        account = await session.get(Account, first.account.id)
        other_key = await eu.data_keys.load(session, other.user.id)
    assert credential
    assert account
    with pytest.raises(AadMismatch):
        await eu.sealer.open_from(key, credential, "access_token_sealed")  # other column
    with pytest.raises(AadMismatch):
        await eu.sealer.open_from(key, account, "holder_name_sealed")
    blob = credential.refresh_token_sealed
    assert blob is not None
    moved = Field("credentials", "refresh_token_sealed", other.credential.id, first.user.id)
    with pytest.raises(AadMismatch):  # same user, another row
        await eu.sealer.open(key, moved, blob)
    with pytest.raises(WrongDataKey):  # another user's row: their key cannot open it
        await eu.sealer.open(other_key, Field(
            "credentials", "refresh_token_sealed", other.credential.id, other.user.id), blob)
    # In its own place it still opens: the copies, not the original, are refused.
    assert await eu.sealer.open_from(key, credential, "refresh_token_sealed") == SECRETS["refresh"]


async def test_a_column_opened_at_once_opens_as_value_by_value_and_refuses_copies(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    make_linked: fixtures.LinkFactory,
) -> None:
    first = await make_linked("eu", refresh_token=SECRETS["refresh"])
    second = await make_linked("eu")
    eu = custody["eu"]
    async with region_router.reader("eu") as session:
        key = await eu.data_keys.load(session, first.user.id)
        credential = await session.get(Credential, first.credential.id)
    assert credential is not None
    assert credential.refresh_token_sealed is not None
    blob = credential.refresh_token_sealed
    opened = await eu.sealer.open_column(key, "credentials", "refresh_token_sealed", [
        (first.credential.id, first.user.id, blob), (first.credential.id, first.user.id, None),
    ])
    assert opened == [SECRETS["refresh"].encode(), None]
    with pytest.raises(AadMismatch):  # the same blob claimed for another row
        await eu.sealer.open_column(key, "credentials", "refresh_token_sealed",
                                    [(second.credential.id, first.user.id, blob)])
    with pytest.raises(AadMismatch):  # or for another column
        await eu.sealer.open_column(key, "credentials", "access_token_sealed",
                                    [(first.credential.id, first.user.id, blob)])


def _documented_aad(*parts: str) -> bytes:
    # The encoding in aggregator/sealing.py's docstring, written out independently.
    out = b"aggregator/field/v1"
    for part in parts:
        raw = part.encode("utf-8")
        out += len(raw).to_bytes(2, "big") + raw
    return out


def _sealed_models() -> list[tuple[type[Base], str]]:
    return sorted(
        ((mapper.class_, column.name) for mapper in Base.registry.mappers
         for column in sealed_columns(table_of(mapper.class_))),
        key=lambda item: (item[0].__name__, item[1]),
    )


@pytest.mark.parametrize(("model", "column"), _sealed_models(),
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
async def test_every_sealed_column_is_bound_to_its_documented_place(
    custody: dict[str, RegionCustody], model: type[Base], column: str,
) -> None:
    # The sealer's fast AAD must be byte-identical to field_of's and to the documented
    # encoding: stored values open only under exactly these bytes.
    obj = model()
    keys = [prop.key for prop in (inspect(model).get_property_by_column(c)
                                  for c in inspect(model).primary_key)]
    for i, attribute in enumerate(keys):
        setattr(obj, attribute, f"row_eu_{i}_é")
    subject = obj.id if isinstance(obj, User) else "usr_eu_owner"
    if not isinstance(obj, User):
        setattr(obj, "user_id", subject)  # noqa: B010 (Base declares no user_id)
    row_id = "/".join(f"row_eu_{i}_é" for i in range(len(keys)))
    expected = _documented_aad(model.__tablename__, column, row_id, subject, "eu")
    assert custody["eu"].sealer.aad_of(obj, column) == expected
    assert field_of(obj, column).aad("eu") == expected
    assert field_of(obj, column) == Field(model.__tablename__, column, row_id, subject)


async def test_the_place_follows_the_row_as_it_is_now(
    custody: dict[str, RegionCustody],
) -> None:
    sealer = custody["eu"].sealer
    txn = Transaction(id=TransactionId("txn_eu_a"), user_id=UserId("usr_eu_a"))
    first = sealer.aad_of(txn, "description_sealed")
    # Nothing about the old row is reused:
    txn.id, txn.user_id = TransactionId("txn_eu_b"), UserId("usr_eu_b")
    assert sealer.aad_of(txn, "description_sealed") == _documented_aad(
        "transactions", "description_sealed", "txn_eu_b", "usr_eu_b", "eu") != first
    with pytest.raises(ValueError, match="not a sealed column"):
        sealer.aad_of(txn, "currency")
    with pytest.raises(ValueError, match="assign transactions's id"):
        sealer.aad_of(Transaction(user_id=UserId("usr_eu_a")), "description_sealed")
    with pytest.raises(ValueError, match="name no user"):
        sealer.aad_of(Transaction(id=TransactionId("txn_eu_c")), "description_sealed")


async def test_the_sealers_cache_of_subjects_stays_bounded(
    custody: dict[str, RegionCustody],
) -> None:
    sealer = custody["eu"].sealer
    txn = Transaction(id=TransactionId("txn_eu_a"))
    for i in range(sealing._TAILS_KEPT + 10):
        txn.user_id = UserId(f"usr_eu_{i}")
        assert sealer.aad_of(txn, "description_sealed").endswith(
            _documented_aad(f"usr_eu_{i}", "eu")[len(b"aggregator/field/v1"):])
    assert 0 < len(sealer._tails) <= sealing._TAILS_KEPT


def test_places_are_encoded_without_ambiguity() -> None:
    assert Field("a_b", "c", "r", "s").aad("eu") != Field("a", "b_c", "r", "s").aad("eu")
    assert Field("t", "c", "r", "s").aad("eu") != Field("t", "c", "r", "s").aad("us")
    with pytest.raises(ValueError, match=r"1\.\.65535"):
        Field("t", "c", "", "s").aad("eu")


async def test_keyed_hash_finds_an_account_by_its_identifier(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    make_linked: fixtures.LinkFactory,
) -> None:
    linked = await make_linked("eu", iban=IBAN)
    await make_linked("eu", iban="GB33BUKB20201555555555")
    digest = custody["eu"].hasher.account_identifier("de89 3704 0044 0532 0130 00")
    async with region_router.reader("eu") as session:
        found = (await session.execute(
            select(Account.id).where(Account.identifier_digest == digest)
        )).scalars().all()
    assert found == [linked.account.id]
    # Each region has its own pepper: a digest means nothing in another region.
    assert custody["us"].hasher.account_identifier(IBAN) != digest


async def test_users_are_found_by_their_external_id(
    region_router: RegionRouter, custody: dict[str, RegionCustody],
    make_linked: fixtures.LinkFactory, app_id: ApplicationId,
) -> None:
    linked = await make_linked("us", external_id=SECRETS["external"])
    async with region_router.reader("us") as session:
        user = await find_user(session, custody["us"], app_id, SECRETS["external"])
        nobody = await find_user(session, custody["us"], app_id, "someone.else@example.test")
    assert user is not None
    assert user.id == linked.user.id
    assert nobody is None
