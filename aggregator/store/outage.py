"""One region's database being down must not take the others with it.

Pages and jobs that visit every region (the operator console, sign-in) read each region
through its own session and treat these errors as "that region is unavailable" rather
than as a failure of the whole request. Nothing here retries: a region that failed a
read is shown as unavailable, and the next request asks it again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError

from aggregator.store.router import RegionRouter

T = TypeVar("T")

#: What a region whose database cannot be reached raises: the driver's connection errors
#: (wrapped by SQLAlchemy), a refused or reset socket, a connect timeout.
#: A constraint violation or a bad query is a bug, not an outage, and is not caught.
REGION_DOWN: tuple[type[BaseException], ...] = (
    OperationalError, InterfaceError, OSError, TimeoutError,
)


@dataclass(frozen=True, slots=True)
class RegionResult(Generic[T]):
    """One region's answer, or why there is none (a short reason, never a message that
    could carry a connection string)."""

    region: str
    value: T | None = None
    unavailable: bool = False

    @property
    def ok(self) -> bool:
        return not self.unavailable


async def each_region(
    router: RegionRouter, read: Callable[[str], Awaitable[T]],
    regions: tuple[str, ...] | None = None,
) -> list[RegionResult[T]]:
    """``read(region)`` for every region in turn, each in isolation from the others."""
    out: list[RegionResult[T]] = []
    for region in regions or router.regions:
        try:
            out.append(RegionResult(region, await read(region)))
        except REGION_DOWN:
            out.append(RegionResult(region, unavailable=True))
    return out
