"""Stores for every test, on SQLite and on a real PostgreSQL, plus factories on top.

``region_router`` is parametrised over both backends, so every test that uses it runs
twice. Two regions, ``eu`` and ``us``, each get their own database:

- SQLite: one file per region, migrated once per session into a template and copied
  per test (a copy is cheaper than a migration);
- PostgreSQL: the databases ``aggregator_test_eu`` and ``aggregator_test_us`` on
  ``$AGGREGATOR_TEST_POSTGRES_URL`` (created if missing), a schema created for the
  session and upgraded with Alembic, dropped at the end; every table truncated before
  each test.
  Tests commit for real (concurrency tests need several connections), hence truncation
  rather than a rollback per test. The variant is skipped, with the reason, only when
  the server does not answer; under CI a skip fails the run (tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from aggregator.applications import create_application
from aggregator.custody import RegionCustody, region_custody
from aggregator.datakeys import SealLedger
from aggregator.ids import ApplicationId, new_id
from aggregator.models import (
    Account,
    AccountType,
    AuditHead,
    Connection,
    ConnectionStatus,
    Credential,
    Transaction,
    TransactionStatus,
    metadata,
)
from aggregator.models.base import table_of
from aggregator.settings import RegionSettings, Settings
from aggregator.store import RegionRouter, take_change_seqs, upgrade
from aggregator.store.engines import create_region_engine
from aggregator.users import create_user
from tests.aggregator._factories import (
    CustodyFactory,
    Linked,
    LinkFactory,
    RawFiles,
    TransactionFactory,
)
from vault import Envelope, LocalKeyringConfig, open_provider

REGIONS = ("eu", "us")
POSTGRES_URL = os.environ.get(
    "AGGREGATOR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432"
)


# -- databases ------------------------------------------------------------------


async def _migrate(urls: Mapping[str, str]) -> None:
    for region, url in urls.items():
        engine = create_region_engine(region, url)
        try:
            await upgrade(engine)
        finally:
            await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sqlite-template")
    asyncio.run(_migrate({r: f"sqlite+aiosqlite:///{directory / f'{r}.sqlite3'}" for r in REGIONS}))
    return directory


def _libpq(url: str, database: str) -> str:
    parsed = make_url(url).set(drivername="postgresql", database=database)
    return parsed.render_as_string(hide_password=False)


def _connect(database: str) -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(_libpq(POSTGRES_URL, database), autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_urls() -> Iterator[dict[str, str]]:
    """The per-region test databases, created if missing, migrated once per session.

    Each session migrates into its own fresh schema (``search_path`` in the URL) and
    drops it at the end: test runs on one machine (a developer's and an agent's, or
    xdist workers) then never truncate or drop each other's tables mid-test.
    """
    try:
        admin = _connect("postgres")
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL does not answer at {POSTGRES_URL}: {exc}".splitlines()[0])
    schema = f"test_{secrets.token_hex(6)}"
    urls = {}
    with admin:
        for region in REGIONS:
            name = f"aggregator_test_{region}"
            if admin.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (name,)
            ).fetchone() is None:
                with contextlib.suppress(psycopg.errors.DuplicateDatabase,
                                         psycopg.errors.UniqueViolation):  # a parallel run
                    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            with _connect(name) as db:
                db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            urls[region] = (
                make_url(POSTGRES_URL).set(database=name)
                .update_query_dict({"options": f"-csearch_path={schema}"})
                .render_as_string(hide_password=False)
            )
    asyncio.run(_migrate(urls))
    yield urls
    for region in REGIONS:
        with _connect(f"aggregator_test_{region}") as db:
            db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


async def truncate(urls: Mapping[str, str]) -> None:
    """Empty every table of the PostgreSQL test databases, as right after the migration."""
    tables = ", ".join(t.name for t in metadata.sorted_tables)
    for region, url in urls.items():
        engine = create_region_engine(region, url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
                await conn.execute(
                    insert(table_of(AuditHead)).values(id=1, seq=0, hash=bytes(32))
                )
        finally:
            await engine.dispose()


@pytest.fixture
def clean_postgres(postgres_urls: dict[str, str]) -> dict[str, str]:
    """The PostgreSQL test databases, emptied, for tests that bring their own router."""
    asyncio.run(truncate(postgres_urls))
    return postgres_urls


@dataclass(frozen=True)
class Backend:
    name: str
    urls: Mapping[str, str]
    directory: Path | None = None  # SQLite files, for byte-level inspection


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        directory = tmp_path / "db"
        shutil.copytree(template, directory)
        return Backend(
            "sqlite",
            {r: f"sqlite+aiosqlite:///{directory / f'{r}.sqlite3'}" for r in REGIONS},
            directory,
        )
    return Backend("postgres", request.getfixturevalue("postgres_urls"))


@pytest.fixture
def settings(backend: Backend, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        regions={
            r: RegionSettings(r, backend.urls[r], LocalKeyringConfig(tmp_path / "keys", r))
            for r in REGIONS
        },
        sandbox_banks=True,  # the built-in sandbox banks are opt-in (aggregator.bank_profiles)
    )


@pytest.fixture
async def region_router(backend: Backend, settings: Settings) -> AsyncIterator[RegionRouter]:
    if backend.name == "postgres":
        await truncate(backend.urls)
    router = RegionRouter(settings)
    yield router
    await router.dispose()


# -- keys -----------------------------------------------------------------------

@pytest.fixture
async def custody_factory(
    region_router: RegionRouter, settings: Settings
) -> AsyncIterator[CustodyFactory]:
    """Build each region's custody (local keyring; fresh envelopes = a fresh process)."""
    made: list[RegionCustody] = []

    async def make(**envelope_options: Any) -> dict[str, RegionCustody]:
        out = {}
        for region in REGIONS:
            provider = open_provider(settings.region(region).keys)
            provider.ensure_kek()
            ledger = SealLedger(region_router.engine(region))
            envelope = Envelope(provider, seal_counter=ledger, **envelope_options)
            out[region] = await region_custody(region_router, region, envelope, ledger)
            made.append(out[region])
        return out

    yield make
    for custody in made:
        custody.close()


@pytest.fixture
async def custody(custody_factory: CustodyFactory) -> dict[str, RegionCustody]:
    return await custody_factory()


# -- entities -------------------------------------------------------------------


@pytest.fixture
async def app_id(region_router: RegionRouter) -> ApplicationId:
    app, _key = await create_application(region_router, "Budgetly", ["https://app.test/cb"])
    return app


@pytest.fixture
def make_linked(
    region_router: RegionRouter, custody: dict[str, RegionCustody], app_id: ApplicationId
) -> LinkFactory:
    """``await make_linked("eu", iban=…, access_token=…)``: a user linked to a bank."""
    counter = iter(range(1_000_000))

    async def make(
        region: str, *, external_id: str | None = None, iban: str = "DE89370400440532013000",
        holder: str = "Erika Mustermann", access_token: str = "at-secret",
        refresh_token: str = "rt-secret",
    ) -> Linked:
        keys = custody[region]
        async with region_router.session(region) as session, session.begin():
            user = await create_user(
                session, keys, app_id, external_id or f"user-{next(counter)}@example.test"
            )
            key = await keys.data_keys.load(session, user.id)
            connection = Connection(
                id=new_id("con", region), user_id=user.id, application_id=app_id,
                bank_id="sandbox", status=ConnectionStatus.ACTIVE,
            )
            credential = Credential(
                id=new_id("crd", region), connection_id=connection.id, user_id=user.id,
                refresh_due_at=datetime.now(UTC) + timedelta(minutes=50),
            )
            await keys.sealer.seal_into(
                key, credential, "access_token_sealed", access_token, session=session)
            await keys.sealer.seal_into(
                key, credential, "refresh_token_sealed", refresh_token, session=session)
            account = Account(
                id=new_id("acc", region), connection_id=connection.id, user_id=user.id,
                bank_account_id=f"bank-acc-{next(counter)}", name="Giro",
                type=AccountType.CHECKING, currency="EUR", masked_identifier=iban[-4:],
                identifier_digest=keys.hasher.account_identifier(iban),
            )
            await keys.sealer.seal_into(key, account, "identifier_sealed", iban, session=session)
            await keys.sealer.seal_into(key, account, "holder_name_sealed", holder,
                                        session=session)
            session.add_all([connection, credential, account])
        return Linked(user, connection, credential, account)

    return make


@pytest.fixture
def add_transaction(
    region_router: RegionRouter, custody: dict[str, RegionCustody]
) -> TransactionFactory:
    """``await add_transaction(linked, description=…, amount=Decimal(…))``."""

    async def add(
        linked: Linked, *, description: str = "Coffee", counterparty: str | None = None,
        amount: Decimal = Decimal("-3.5000"), bank_id: str | None = None,
    ) -> Transaction:
        region = linked.user.home_region
        keys = custody[region]
        async with region_router.session(region) as session, session.begin():
            key = await keys.data_keys.load(session, linked.user.id)
            seq = await take_change_seqs(session, linked.connection.id, 1)
            txn = Transaction(
                id=new_id("txn", region), account_id=linked.account.id,
                connection_id=linked.connection.id, user_id=linked.user.id,
                bank_transaction_id=bank_id or new_id("txn", region), amount=amount,
                currency="EUR", booked_on=date(2025, 3, 1), status=TransactionStatus.BOOKED,
                created_seq=seq, change_seq=seq,
            )
            await keys.sealer.seal_into(key, txn, "description_sealed", description,
                                        session=session)
            await keys.sealer.seal_into(key, txn, "counterparty_sealed", counterparty,
                                        session=session)
            session.add(txn)
        return txn

    return add


@pytest.fixture
def raw_files(backend: Backend) -> RawFiles:
    """The bytes of every SQLite file of the test (database and WAL)."""

    def read() -> Iterator[tuple[Path, bytes]]:
        assert backend.directory is not None
        for path in sorted(backend.directory.iterdir()):
            yield path, path.read_bytes()

    return read
