"""``DELETE /v1/users/{id}`` and ``GET /v1/erasure-requests/{id}`` over the sandbox bank."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from aggregator.custody import RegionCustody
from aggregator.erasure import ErasureConfig, ErasureRequestOut, retry_failed
from aggregator.http import Services
from aggregator.http.routes.erasure import CONFIG_KEY
from aggregator.models import AuditEvent, ErasureRequest, ErasureState, RevocationOutcome
from aggregator.store import RegionRouter
from tests.aggregator._factories import LinkFactory
from tests.aggregator.http._helpers import assert_problem, parsed
from tests.aggregator.http.conftest import BankSwitch


async def test_delete_answers_202_and_the_request_shows_its_receipt_when_done(
    api: httpx.AsyncClient, make_linked: LinkFactory, bank_switch: BankSwitch,
) -> None:
    linked = await make_linked("eu")
    first = parsed(ErasureRequestOut, await api.delete(f"/v1/users/{linked.user.id}"), 202)
    assert first.id.startswith("era_eu_")

    # The job ran right after the response (a background task of the same app).
    done = parsed(ErasureRequestOut, await api.get(f"/v1/erasure-requests/{first.id}"))
    assert done.state is ErasureState.COMPLETED
    assert done.receipt is not None
    assert done.receipt.request_id == first.id
    assert len(done.receipt.user_digest) == 64
    assert done.receipt.counts["users"] == 1
    assert [r.outcome for r in done.receipt.revocations] == [RevocationOutcome.REVOKED]
    assert "/revoke" in bank_switch.paths
    assert not done.overdue

    again = parsed(ErasureRequestOut, await api.delete(f"/v1/users/{linked.user.id}"), 202)
    assert again.id == first.id
    assert again.state is ErasureState.COMPLETED
    assert_problem(await api.get(f"/v1/users/{linked.user.id}"), 404)


async def test_another_applications_user_or_request_is_a_404(
    api: httpx.AsyncClient, other_api: httpx.AsyncClient, make_linked: LinkFactory,
    region_router: RegionRouter,
) -> None:
    linked = await make_linked("eu")
    assert_problem(await other_api.delete(f"/v1/users/{linked.user.id}"), 404)
    assert await _requests(region_router) == 0
    request = parsed(ErasureRequestOut, await api.delete(f"/v1/users/{linked.user.id}"), 202)
    assert_problem(await other_api.get(f"/v1/erasure-requests/{request.id}"), 404)
    assert_problem(await other_api.delete(f"/v1/users/{linked.user.id}"), 404)


async def test_a_user_id_of_a_region_not_served_here_is_a_404_and_writes_nothing(
    api: httpx.AsyncClient, region_router: RegionRouter,
) -> None:
    assert_problem(await api.delete("/v1/users/usr_ap_aaaaaaaaaaaaaaaaaaaaaaaaaa"), 404)
    assert_problem(await api.delete("/v1/users/con_eu_aaaaaaaaaaaaaaaaaaaaaaaaaa"), 404)
    assert_problem(await api.get("/v1/erasure-requests/era_ap_aaaaaaaaaaaaaaaaaaaaaaaaaa"), 404)
    assert await _requests(region_router) == 0


async def test_an_unreachable_bank_does_not_block_erasure_and_a_retry_is_recorded(
    api: httpx.AsyncClient, make_linked: LinkFactory, bank_switch: BankSwitch,
    services: Services, region_router: RegionRouter, custody: dict[str, RegionCustody],
) -> None:
    services.extra[CONFIG_KEY] = ErasureConfig(revoke_attempts=2, revoke_backoff=0.0)
    linked = await make_linked("eu")
    bank_switch.down = True
    request = parsed(ErasureRequestOut, await api.delete(f"/v1/users/{linked.user.id}"), 202)
    done = parsed(ErasureRequestOut, await api.get(f"/v1/erasure-requests/{request.id}"))
    assert done.state is ErasureState.COMPLETED
    assert done.receipt is not None
    [failed] = done.receipt.revocations
    assert (failed.outcome, failed.attempts, failed.last_error) == (
        RevocationOutcome.FAILED, 2, "bank_unavailable")

    bank_switch.down = False
    outcomes = await retry_failed(region_router, custody["eu"], services.banks, request.id)
    assert outcomes == [RevocationOutcome.REVOKED]
    later = parsed(ErasureRequestOut, await api.get(f"/v1/erasure-requests/{request.id}"))
    assert later.receipt is not None
    [retried] = later.receipt.revocations
    assert (retried.outcome, retried.attempts) == (RevocationOutcome.REVOKED, 3)
    assert retried.revoked_at is not None
    async with region_router.reader("eu") as session:
        actions = list((await session.execute(select(AuditEvent.action))).scalars())
    assert actions[-3:] == ["erasure.requested", "user.erased", "erasure.revocation_retried"]


async def _requests(router: RegionRouter) -> int:
    total = 0
    for region in router.regions:
        async with router.reader(region) as session:
            total += (await session.execute(
                select(func.count()).select_from(ErasureRequest))).scalar_one()
    return total
