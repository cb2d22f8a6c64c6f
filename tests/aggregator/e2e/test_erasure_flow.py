"""Erasure of a user linked through the real flow: RFC 7009 over sockets, and a dead bank."""

from __future__ import annotations

import asyncio
import socket

import httpx

from aggregator.erasure import ErasureConfig, ErasureJob
from aggregator.http.routes.erasure import INLINE_KEY
from aggregator.models import ErasureState, RevocationOutcome
from aggregator.sync import BankDirectory
from connectors import load_profiles
from tests.aggregator.e2e.conftest import APP_REDIRECT, Gateway
from tests.aggregator.erasure.conftest import rows_mentioning


async def _until_done(gateway: Gateway, request_id: str) -> dict[str, object]:
    for _ in range(100):  # the job runs after the 202 went out: poll, bounded
        body: dict[str, object] = (await gateway.api.get(
            f"/v1/erasure-requests/{request_id}")).json()
        if body["state"] == "completed":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"erasure {request_id} did not complete: {body}")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the block ends


async def test_erasing_a_linked_user_revokes_the_grant_at_the_bank(gateway: Gateway) -> None:
    user_id, connection_id = await gateway.link("eu")
    answer = await gateway.api.delete(f"/v1/users/{user_id}")
    assert answer.status_code == 202, answer.text

    body = await _until_done(gateway, str(answer.json()["id"]))

    receipt = body["receipt"]
    assert isinstance(receipt, dict)
    assert [r["outcome"] for r in receipt["revocations"]] == ["revoked"]
    assert receipt["counts"]["connections"] == 1
    assert receipt["counts"]["link_sessions"] == 1
    assert (await gateway.api.get(f"/v1/connections/{connection_id}")).status_code == 404
    assert await rows_mentioning(gateway.services.router, user_id) == []


async def test_link_sessions_are_refused_once_erasure_is_requested(gateway: Gateway) -> None:
    gateway.services.extra[INLINE_KEY] = False  # leave the request to the workers
    user_id = await gateway.user("eu")
    assert (await gateway.api.delete(f"/v1/users/{user_id}")).status_code == 202
    refused = await gateway.api.post("/v1/link/sessions", json={
        "user_id": user_id, "redirect_uri": APP_REDIRECT,
    })
    assert refused.status_code == 404


async def test_a_bank_behind_a_closed_port_fails_revocation_not_erasure(
    gateway: Gateway,
) -> None:
    gateway.services.extra[INLINE_KEY] = False
    user_id, _ = await gateway.link("eu")
    request_id = str((await gateway.api.delete(f"/v1/users/{user_id}")).json()["id"])
    dead = {"sandbox-eu": {"issuer": f"http://127.0.0.1:{_closed_port()}"}}
    async with httpx.AsyncClient(timeout=2) as http:
        banks = BankDirectory(load_profiles([], dead), http)
        job = ErasureJob(gateway.services.router, gateway.services.custody, banks,
                         ErasureConfig(revoke_attempts=2, revoke_backoff=0.01))
        assert await job.run(request_id) is ErasureState.COMPLETED

    body = await _until_done(gateway, request_id)
    receipt = body["receipt"]
    assert isinstance(receipt, dict)
    [revocation] = receipt["revocations"]
    assert revocation["outcome"] == RevocationOutcome.FAILED.value
    assert revocation["attempts"] == 2
    assert await rows_mentioning(gateway.services.router, user_id) == []
