"""Types of the factory fixtures in tests/aggregator/conftest.py, for annotations."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aggregator.custody import RegionCustody
from aggregator.models import Account, Connection, Credential, Transaction, User


@dataclass
class Linked:
    """A user with one connection, its credential and one account, all committed."""

    user: User
    connection: Connection
    credential: Credential
    account: Account


LinkFactory = Callable[..., Awaitable[Linked]]
TransactionFactory = Callable[..., Awaitable[Transaction]]
CustodyFactory = Callable[..., Awaitable[dict[str, RegionCustody]]]
RawFiles = Callable[[], Iterator[tuple[Path, bytes]]]
