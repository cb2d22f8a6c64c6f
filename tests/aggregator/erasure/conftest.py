"""Erasure fixtures: a recording stand-in for the banks, jobs, and a generic row scan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest
from sqlalchemy import Enum, String, Text, select

from aggregator.custody import RegionCustody
from aggregator.erasure import ErasureConfig, ErasureJob
from aggregator.models import metadata
from aggregator.store import RegionRouter
from connectors import BankUnavailable

#: The audit trail is append-only and hash-chained: its events keep the random ids they
#: were written with (a pseudonym nothing maps back to a person once the user row, the
#: sealed external id and the data key are gone). Rewriting it would break the chain.
SCAN_EXEMPT = frozenset({"audit_events"})


@dataclass
class FakeRevoker:
    bank_id: str
    banks: FakeBanks

    async def revoke(
        self, token: str, token_type_hint: Literal["access_token", "refresh_token"] | None = None
    ) -> None:
        self.banks.calls.append((self.bank_id, token, token_type_hint))
        if self.bank_id in self.banks.down:
            raise BankUnavailable(f"{self.bank_id}: revocation: connection refused")
        self.banks.revoked.append(token)


@dataclass
class FakeBanks:
    """Banks that record every RFC 7009 call; those in ``down`` are unreachable."""

    down: set[str] = field(default_factory=set)
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)

    def oauth(self, bank_id: str) -> FakeRevoker:
        return FakeRevoker(bank_id, self)


@pytest.fixture
def fake_banks() -> FakeBanks:
    return FakeBanks()


FAST = ErasureConfig(revoke_attempts=2, revoke_backoff=0.0)
JobFactory = Callable[..., ErasureJob]


@pytest.fixture
def make_job(
    region_router: RegionRouter, custody: dict[str, RegionCustody], fake_banks: FakeBanks
) -> JobFactory:
    def make(**options: Any) -> ErasureJob:
        options.setdefault("config", FAST)
        options.setdefault("banks", fake_banks)
        return ErasureJob(region_router, custody, **options)

    return make


async def rows_mentioning(router: RegionRouter, needle: str) -> list[tuple[str, str, str]]:
    """(region, table, column) of every stored value that contains ``needle``.

    Every text column of every table of every region, from the metadata: a table added
    later is scanned without a change here.
    """
    found = []
    for region in router.regions:
        async with router.reader(region) as session:
            for table in metadata.sorted_tables:
                if table.name in SCAN_EXEMPT:
                    continue
                for column in table.columns:
                    if not isinstance(column.type, String | Text) or isinstance(column.type, Enum):
                        continue
                    hit = (await session.execute(
                        select(column).where(column.contains(needle, autoescape=True)).limit(1)
                    )).first()
                    if hit is not None:
                        found.append((region, table.name, column.name))
    return found
