"""Erasure of one user against a plain ``DELETE … WHERE id = user`` cascade, on PostgreSQL.

Two users get the same data in one throw-away database (unique name, dropped at the
end): 3 connections (each with a credential,
an account, a balance and a sync state) and ``--transactions`` transactions spread over
them (sealed columns filled with random bytes of a realistic size: the delete does not
read them). One is erased by the full job (stop, revoke at a bank that answers at once,
rows counted per table under lock, key destruction whose user-row cascade deletes them,
receipt, audit); the other is deleted with one ``DELETE FROM users`` whose ``ON DELETE
CASCADE`` reaches every row. The order alternates between rounds so caching favours
neither, and both users' rows are vacuumed before timing (:func:`settle`).

The erasure's time includes accepting the request. Its commits: the request, the claim
with the stop step, one per grant's revocation outcome, and one final transaction that
deletes, destroys the key and writes the receipt (steps that need no commit of their own
share it; crash-resumability is unchanged, see :mod:`aggregator.erasure.job`).

Prints ``RESULT erasure_seconds=… rows_per_second=… plain_delete_seconds=…
erasure_vs_plain_delete=… delete_step_vs_plain_delete=…``: times are medians over
rounds; each ratio is the median over pairs of rounds (one with the erasure first, one
with the plain delete first: whichever runs first after the rows are written is
measurably slower, so only a pair is fair) of the pair's summed times, so load that
drifts between pairs on a shared machine cancels out too; the last ratio compares the
final transaction alone, without the fixed cost of the earlier commits.
Then two more erasures against a bank whose revocation takes ``--revoke-ms`` (150 ms by
default: a TLS round trip to another network plus the bank's work); their limit is the
plain delete plus one revocation, printed as ``erasure_with_bank_vs_limit``: the
connections' revocations run concurrently (at most ``revoke_per_bank`` at one bank,
:class:`aggregator.erasure.revocation.RevocationLimits`), so they need not queue behind
one another; sequential revocation would cost one latency per connection.
Target: ``erasure_vs_plain_delete`` within 2. ``BENCH_STEPS=1`` prints the time to each
checkpoint (request, stopped, revoked, deleted, shredded, completed; the last three are
one commit).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import _postgres  # bench/_postgres.py: run as `python bench/…`
import psycopg
from _postgres import libpq
from sqlalchemy import delete, insert

from aggregator.applications import create_application
from aggregator.custody import RegionCustody, region_custody
from aggregator.datakeys import SealLedger
from aggregator.erasure import ErasureConfig, ErasureJob, request_erasure
from aggregator.ids import ApplicationId, new_id
from aggregator.models import (
    Account,
    AccountType,
    Balance,
    Connection,
    ConnectionStatus,
    Credential,
    ErasureRequest,
    SyncState,
    Transaction,
    TransactionStatus,
    User,
)
from aggregator.models.base import table_of
from aggregator.settings import RegionSettings, Settings
from aggregator.store import RegionRouter, upgrade
from aggregator.users import create_user
from vault import Envelope, LocalKeyringConfig, open_provider

URL = os.environ.get("AGGREGATOR_BENCH_POSTGRES_URL",
                     "postgresql+psycopg://postgres@127.0.0.1:5432")
CONNECTIONS = 3


class Bank:
    """A bank's RFC 7009 revocation endpoint answering after ``latency`` seconds.

    0 isolates the gateway's own work; a real bank's revocation is a TLS round trip to
    another network plus the bank's processing, 100-300 ms in practice.
    """

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.calls = 0
        self.in_flight = 0
        self.peak = 0  # revocations in flight at once: the job's per-bank bound caps it

    async def revoke(self, token: str,
                     token_type_hint: Literal["access_token", "refresh_token"] | None = None,
                     ) -> None:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
        finally:
            self.in_flight -= 1


class Banks:
    def __init__(self, latency: float = 0.0) -> None:
        self.bank = Bank(latency)

    def oauth(self, bank_id: str) -> Bank:
        return self.bank


def _libpq(database: str) -> str:
    return libpq(URL, database)


def create_database() -> tuple[str, str]:
    """A throw-away database with a unique name (``bench_erasure_…``); (name, URL)."""
    return _postgres.create_database(URL, "erasure")


def settle(schema: str) -> None:
    """Vacuum, analyze and checkpoint the freshly written rows of both users.

    Right after a 100k-row insert, autovacuum, hint-bit writes and the flush of that
    WAL land on whichever delete commits first; real users' rows are long settled. Both
    users' rows are settled alike (after the checkpoint each delete pays the full-page
    writes of its own pages), so neither delete gets an advantage.
    """
    with psycopg.connect(_libpq(schema), autocommit=True) as db:
        db.execute("VACUUM (ANALYZE)")
        db.execute("CHECKPOINT")


def drop_database(name: str) -> None:
    _postgres.drop_database(URL, name)


async def populate(router: RegionRouter, keys: RegionCustody, app_id: ApplicationId,
                   transactions: int) -> str:
    now = datetime.now(UTC)
    async with router.session("eu") as session, session.begin():
        user = await create_user(session, keys, app_id, f"bench-{secrets.token_hex(4)}")
        key = await keys.data_keys.load(session, user.id)
        accounts = []
        for i in range(CONNECTIONS):
            con = Connection(id=new_id("con", "eu"), user_id=user.id, application_id=app_id,
                             bank_id="bench", status=ConnectionStatus.ACTIVE,
                             change_seq=transactions)
            crd = Credential(id=new_id("crd", "eu"), connection_id=con.id, user_id=user.id,
                             refresh_due_at=now + timedelta(hours=1))
            await keys.sealer.seal_into(key, crd, "access_token_sealed", f"at-{i}",
                                        session=session)
            await keys.sealer.seal_into(key, crd, "refresh_token_sealed", f"rt-{i}",
                                        session=session)
            acc = Account(id=new_id("acc", "eu"), connection_id=con.id, user_id=user.id,
                          bank_account_id=f"a{i}", name="Giro", type=AccountType.CHECKING,
                          currency="EUR")
            session.add_all([con, crd, acc])
            await session.flush()
            session.add_all([
                Balance(account_id=acc.id, user_id=user.id, current=Decimal("1.0000"),
                        currency="EUR", as_of=now),
                SyncState(connection_id=con.id, user_id=user.id),
            ])
            accounts.append((con.id, acc.id))
    rows: list[dict[str, Any]] = []
    for n in range(transactions):
        con_id, acc_id = accounts[n % CONNECTIONS]
        rows.append({
            "id": new_id("txn", "eu"), "account_id": acc_id, "connection_id": con_id,
            "user_id": user.id, "bank_transaction_id": f"b{n}", "amount": Decimal("-1.5"),
            "currency": "EUR", "booked_on": date(2025, 1, 1),
            "status": TransactionStatus.BOOKED, "description_sealed": os.urandom(90),
            "counterparty_sealed": os.urandom(70), "created_seq": n + 1, "change_seq": n + 1,
            "created_at": now, "updated_at": now,
        })
    txns = table_of(Transaction)
    async with router.session("eu") as session, session.begin():
        for start in range(0, len(rows), 5000):
            await session.execute(insert(txns), rows[start:start + 5000])
    return user.id


async def erase(router: RegionRouter, custody: dict[str, RegionCustody],
                app_id: ApplicationId, user_id: str, banks: Banks | None = None,
                config: ErasureConfig | None = None) -> tuple[float, int, float]:
    config = config or ErasureConfig()
    started = time.perf_counter()
    request = await request_erasure(router, custody["eu"], user_id, app_id,
                                    config=config, actor=app_id)
    assert request is not None
    marks = [time.perf_counter()]
    job = ErasureJob(router, custody, banks or Banks(), config,
                     checkpoint=lambda _s: marks.append(time.perf_counter()))
    await job.run(request.id)
    if os.environ.get("BENCH_STEPS"):
        print("  request", f"{marks[0] - started:.3f}",
              " ".join(f"{b - a:.3f}" for a, b in itertools.pairwise(marks)))
    elapsed = time.perf_counter() - started
    async with router.reader("eu") as session:
        done = await session.get(ErasureRequest, request.id)
    assert done is not None
    assert done.counts is not None
    delete_step = marks[3] - marks[2]  # checkpoints: stopped, revoked, deleted (final), …
    return elapsed, sum(done.counts.values()), delete_step


async def plain_delete(router: RegionRouter, user_id: str) -> float:
    started = time.perf_counter()
    async with router.session("eu") as session, session.begin():
        await session.execute(delete(table_of(User)).where(table_of(User).c.id == user_id))
    return time.perf_counter() - started


async def main(transactions: int, rounds: int, latency: float, per_bank: int) -> None:
    if rounds < 2 or rounds % 2:
        raise SystemExit("--rounds must be an even number, at least 2")
    schema, url = create_database()
    keydir = Path(tempfile.mkdtemp(prefix="erasure-bench-"))
    settings = Settings(data_dir=keydir, regions={
        "eu": RegionSettings("eu", url, LocalKeyringConfig(keydir / "keys", "eu"))})
    router = RegionRouter(settings)
    provider = open_provider(settings.region("eu").keys)
    try:
        await upgrade(router.engine("eu"))
        provider.ensure_kek()
        ledger = SealLedger(router.engine("eu"))
        custody = {"eu": await region_custody(router, "eu",
                                              Envelope(provider, seal_counter=ledger), ledger)}
        app_id, _ = await create_application(router, "Bench", [])
        erased: list[float] = []
        plain: list[float] = []
        rates: list[float] = []
        ratios: list[float] = []
        step_ratios: list[float] = []
        steps: list[float] = []
        for r in range(rounds):
            a = await populate(router, custody["eu"], app_id, transactions)
            b = await populate(router, custody["eu"], app_id, transactions)
            settle(schema)
            if r % 2:
                plain.append(await plain_delete(router, b))
                seconds, rows, step = await erase(router, custody, app_id, a)
            else:
                seconds, rows, step = await erase(router, custody, app_id, a)
                plain.append(await plain_delete(router, b))
            erased.append(seconds)
            steps.append(step)
            rates.append(rows / seconds)
            if r % 2:  # a pair is complete: one round of each order
                pair = sum(plain[-2:])
                ratios.append(sum(erased[-2:]) / pair)
                step_ratios.append(sum(steps[-2:]) / pair)
            print(f"round {r + 1}: erasure {seconds:.3f}s ({rows} rows), "
                  f"plain delete {plain[-1]:.3f}s")
        e, p, q, d = (statistics.median(x) for x in (erased, plain, ratios, step_ratios))
        # With a bank that takes ``latency`` to revoke: the limit is the plain delete
        # plus one revocation (the grants' revocations need not wait for each other).
        slow = Banks(latency)
        with_bank = []
        for _ in range(2):
            user = await populate(router, custody["eu"], app_id, transactions)
            settle(schema)
            with_bank.append((await erase(router, custody, app_id, user, slow,
                                          ErasureConfig(revoke_per_bank=per_bank)))[0])
        w = statistics.median(with_bank)
        print(f"erasure with a bank revoking in {latency * 1e3:.0f} ms ({slow.bank.calls} "
              f"revocations, at most {slow.bank.peak} at once): {w:.3f}s; limit plain delete "
              f"+ one revocation {p + latency:.3f}s")
        print(f"RESULT erasure_seconds={e:.3f} rows_per_second={statistics.median(rates):.0f} "
              f"plain_delete_seconds={p:.3f} erasure_vs_plain_delete={q:.2f} "
              f"delete_step_vs_plain_delete={d:.2f} erasure_with_bank_seconds={w:.3f} "
              f"erasure_with_bank_vs_limit={w / (p + latency):.2f}")
    finally:
        provider.close()
        await router.dispose()
        drop_database(schema)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=6, help="an even number (pairs)")
    parser.add_argument("--revoke-per-bank", type=int, default=ErasureConfig().revoke_per_bank,
                        help="revocations in flight at one bank (1: one after another)")
    parser.add_argument("--revoke-ms", type=float, default=150.0,
                        help="the slow bank's revocation latency")
    parser.add_argument("--quick", action="store_true", help="5k transactions, 2 rounds")
    options = parser.parse_args()
    if options.quick:
        options.transactions, options.rounds = 5_000, 2
    asyncio.run(main(options.transactions, options.rounds, options.revoke_ms / 1e3,
                     options.revoke_per_bank))
