"""No sealed column holds clear text, proven on the database dumps an operator would take.

A real link through the sandbox bank in each region, then ``pg_dump`` of each region's
PostgreSQL schema, or the sqlite3 module's ``iterdump`` of each region's SQLite file: a
backup leaks what the database holds. Neither may contain a token the bank issued, an
account number, a holder name or a transaction description, while both must contain
the sealed blobs of those values (else the check would pass on an empty dump).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from aggregator.models import Account, Credential, Transaction
from tests.aggregator.conftest import REGIONS, Backend
from tests.aggregator.e2e.conftest import Gateway

SANDBOX_USER = "alice"  # whom Gateway.link signs in as


def _pg_dump_binary() -> str:
    found = shutil.which("pg_dump") or next(
        (str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_dump"))), None
    )
    if found is None:  # a skip of a `postgres` test fails the run under CI
        pytest.skip("pg_dump (the PostgreSQL client) is not installed")
    return found


def _pg_dump(url: str) -> str:
    """``pg_dump`` of the test session's schema (``search_path`` in the URL's options)."""
    parsed = make_url(url)
    schema = parsed.query["options"]
    assert isinstance(schema, str)
    schema = schema.removeprefix("-csearch_path=")
    libpq = parsed.set(drivername="postgresql", password=None, query={})
    env = {**os.environ, "PGPASSWORD": parsed.password or ""}
    done = subprocess.run(
        [_pg_dump_binary(), "--dbname", libpq.render_as_string(), "--schema", schema,
         "--no-owner", "--no-privileges"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _sqlite_dump(path: Path) -> str:
    with closing(sqlite3.connect(path)) as db:
        return "\n".join(db.iterdump())


async def _dumps(backend: Backend) -> dict[str, str]:
    if backend.name == "postgres":
        return {r: await asyncio.to_thread(_pg_dump, backend.urls[r]) for r in REGIONS}
    assert backend.directory is not None
    return {r: _sqlite_dump(backend.directory / f"{r}.sqlite3") for r in REGIONS}


def _seed_holder_like_text(gateway: Gateway) -> None:
    """Put holder-like values into every free-text field the bank sends (OBIE v3.1).

    Banks fill account names, references and merchant fields with whatever their
    customers type, often a name: none of it may reach a clear column. Each value is
    unique, so a hit in a dump names the field that leaked.
    """
    for a, account in enumerate(gateway.bank.ledger.accounts_of(SANDBOX_USER)):
        account.nickname = f"Alicia Holderby account {a}"  # Nickname -> accounts.name
        account.holder_name = f"Alicia Holderby holder {a}"  # Account[].Name
        for t, txn in enumerate(account.transactions):
            txn.information = f"Alicia Holderby info {a}.{t}"  # TransactionInformation
            txn.reference = f"AH ref {a}.{t}"  # TransactionReference
            txn.merchant = (f"Alicia Holderby shop {a}.{t}",  # MerchantName
                            f"AH{a}{t}")  # MerchantCategoryCode, free text on the wire
            txn.counterparty = (f"Alicia Holderby payee {a}.{t}", f"{a:02d}{t:04d}77665544")


def _clear_values(gateway: Gateway) -> list[str]:
    """What the bank told the gateway that must only ever be stored sealed."""
    accounts = gateway.bank.ledger.accounts_of(SANDBOX_USER)
    values = [*gateway.issued_tokens]
    for account in accounts:
        values += [account.identification, account.holder_name, account.nickname]
        for t in account.transactions:
            values += [t.information, t.reference or ""]
            values += [*(t.merchant or ()), *(t.counterparty or ())]
    return sorted({v for v in values if v})


async def _sealed_blobs(gateway: Gateway, region: str, connection_id: str) -> list[bytes]:
    async with gateway.services.router.reader(region) as session:
        credential = (await session.execute(
            select(Credential).where(Credential.connection_id == connection_id)
        )).scalar_one()
        account = (await session.execute(
            select(Account).where(Account.connection_id == connection_id).limit(1)
        )).scalar_one()
        txn = (await session.execute(
            select(Transaction).where(Transaction.connection_id == connection_id).limit(1)
        )).scalar_one()
    blobs = [credential.access_token_sealed, credential.refresh_token_sealed,
             account.identifier_sealed, account.holder_name_sealed, txn.description_sealed,
             account.name_sealed]
    return [bytes(b) for b in blobs if b is not None]


async def test_database_dumps_hold_no_clear_text_of_what_the_bank_sent(
    gateway: Gateway, backend: Backend,
) -> None:
    _seed_holder_like_text(gateway)
    linked = {region: (await gateway.link(region, f"customer-{region}"))[1] for region in REGIONS}
    assert len(gateway.issued_tokens) >= 2 * len(REGIONS)  # access and refresh, per link
    needles = _clear_values(gateway)
    dumps = await _dumps(backend)
    for region, dump in dumps.items():
        connection_id = linked[region]
        assert connection_id in dump  # the dump does hold the region's rows...
        blobs = await _sealed_blobs(gateway, region, connection_id)
        assert len(blobs) == 6
        for blob in blobs:  # ...and the sealed values, as hex in either dump format
            assert blob.hex() in dump.lower(), (region, blob[:8].hex())
        leaked = [n for n in needles if n in dump]
        assert not leaked, (region, [n[:6] + "…" for n in leaked])
