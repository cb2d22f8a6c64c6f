"""The Berlin Group consent manager against the sandbox's XS2A interface, over sockets."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aggregator.sandbox import SandboxBank, SandboxConfig, dev_client
from aggregator.sandbox.berlin_testing import complete_sca
from connectors import (
    AccessExceeded,
    BankProtocolError,
    BankUnavailable,
    BankUnsupported,
    ConsentInvalid,
    ConsentRequest,
    ConsentState,
    ProfileError,
    UserPresence,
    load_profiles,
)
from connectors.consents.berlin_group import BerlinGroupConsents
from connectors.dialects.berlin_errors import raise_for_tpp_messages

CALLBACK = "http://127.0.0.1:8080/link/callback"
BANK = "sandbox-berlin"
REDIRECT = {"api.base_url": "/xs2a/redirect", "berlin_group.sca_approach": "redirect"}


class Served:
    def __init__(self, bank: SandboxBank, url: str, http: httpx.AsyncClient) -> None:
        self.bank, self.url, self.http = bank, url, http

    def manager(self, **overrides: Any) -> BerlinGroupConsents:
        profile = load_profiles([], {BANK: {"issuer": self.url, **overrides}})[BANK]
        return BerlinGroupConsents(profile, None, self.http, sleep=self._sleep)

    slept: list[float]

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    bank = SandboxBank(SandboxConfig(clients=[dev_client()]))
    async with bank.serve() as url, httpx.AsyncClient(timeout=10) as http:
        found = Served(bank, url, http)
        found.slept = []
        yield found


def _request(ip: str | None = "192.0.2.7") -> ConsentRequest:
    return ConsentRequest(callback_url=CALLBACK, state="sta_eu_abc",
                          presence=UserPresence(ip))


async def test_create_asks_for_the_sync_budget_and_names_the_link(served: Served) -> None:
    manager = served.manager(**REDIRECT, **{"sync.daily_budget": 3})
    created = await manager.create(_request())
    assert created.state is ConsentState.AWAITING
    assert created.redirect_url is not None
    consent = served.bank.berlin.all()[created.id]
    assert consent.frequency_per_day == 3
    assert consent.recurring
    assert consent.access.all_psd2
    assert consent.redirect_uri == CALLBACK + "?state=sta_eu_abc"


async def test_create_without_the_users_address_is_refused_by_the_bank(
    served: Served,
) -> None:
    with pytest.raises(BankProtocolError, match="FORMAT_ERROR"):
        await served.manager(**REDIRECT).create(_request(ip=None))


async def test_an_approach_the_bank_does_not_offer_is_named(served: Served) -> None:
    # The profile says redirect, but the API is the sandbox's OAuth provider.
    manager = served.manager(**{"berlin_group.sca_approach": "redirect"})
    with pytest.raises(BankUnsupported, match=r"\['scaOAuth'\].*'redirect'"):
        await manager.create(_request())


async def test_oauth_approach_puts_the_consent_in_the_scope(served: Served) -> None:
    manager = served.manager()
    created = await manager.create(_request())
    assert created.redirect_url is None
    params = await manager.authorization_params(created, {"scope": "offline_access",
                                                          "state": "s"})
    assert params == {"scope": f"offline_access AIS:{created.id}", "state": "s"}


async def test_confirm_polls_received_a_bounded_number_of_times(served: Served) -> None:
    manager = served.manager(**REDIRECT, **{"berlin_group.status_poll_attempts": 3})
    served.bank.berlin.status_lag = 2
    created = await manager.create(_request())
    assert created.redirect_url is not None
    await complete_sca(served.http, created.redirect_url)
    granted = await manager.confirm(created)
    assert granted.id == created.id
    assert granted.expires_at is not None
    assert len(served.slept) == 2

    served.slept.clear()
    served.bank.berlin.status_lag = 5
    slow = await manager.create(_request())
    assert slow.redirect_url is not None
    await complete_sca(served.http, slow.redirect_url)
    with pytest.raises(BankProtocolError, match="still awaiting authorisation after 3"):
        await manager.confirm(slow)
    assert len(served.slept) == 2


async def test_confirm_of_a_refused_consent_is_consent_invalid(served: Served) -> None:
    manager = served.manager(**REDIRECT)
    created = await manager.create(_request())
    assert created.redirect_url is not None
    await complete_sca(served.http, created.redirect_url, decision="deny")
    with pytest.raises(ConsentInvalid) as info:
        await manager.confirm(created)
    assert info.value.state == "rejected"


async def test_revoke_deletes_and_an_unknown_consent_is_already_gone(served: Served) -> None:
    manager = served.manager(**REDIRECT)
    created = await manager.create(_request())
    await manager.revoke(created.id)
    assert served.bank.berlin.all()[created.id].status == "terminatedByTpp"
    assert await manager.status(created.id) is ConsentState.REVOKED
    await manager.revoke("no-such-consent")
    assert await manager.status("no-such-consent") is ConsentState.UNKNOWN


def test_psu_ip_address_only_when_the_user_is_present(served: Served) -> None:
    manager = served.manager()
    assert manager.resource_headers("c1", None) == {"Consent-ID": "c1"}
    assert manager.resource_headers("c1", UserPresence()) == {"Consent-ID": "c1"}
    assert manager.resource_headers("c1", UserPresence("192.0.2.7")) == {
        "Consent-ID": "c1", "PSU-IP-Address": "192.0.2.7"}


def _answer(status: int, *codes: str, **headers: str) -> httpx.Response:
    body = {"tppMessages": [{"category": "ERROR", "code": c, "text": "secret text"}
                            for c in codes]}
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(("answer", "error", "state"), [
    (_answer(401, "CONSENT_EXPIRED"), ConsentInvalid, "expired"),
    (_answer(400, "CONSENT_UNKNOWN"), ConsentInvalid, "unknown"),
    (_answer(401, "CONSENT_INVALID"), BankProtocolError, None),
    (_answer(503), BankUnavailable, None),
])
def test_tpp_messages_map_to_connector_errors(
    answer: httpx.Response, error: type[Exception], state: str | None,
) -> None:
    with pytest.raises(error) as info:
        raise_for_tpp_messages(answer, "GET /v1/accounts: HTTP x")
    assert "secret text" not in str(info.value)
    if state is not None:
        assert isinstance(info.value, ConsentInvalid)
        assert info.value.state == state


def test_access_exceeded_resets_at_retry_after_or_midnight() -> None:
    with pytest.raises(AccessExceeded) as info:
        raise_for_tpp_messages(_answer(429, "ACCESS_EXCEEDED", **{"Retry-After": "600"}), "x")
    assert 590 < (info.value.retry_after or 0) <= 600
    with pytest.raises(AccessExceeded) as midnight:
        raise_for_tpp_messages(_answer(429, "ACCESS_EXCEEDED"), "x")
    assert midnight.value.reset_at.time().isoformat() == "00:00:00"


@pytest.mark.parametrize(("approach", "message"), [
    ("embedded", "collect the user's bank password"),
    ("decoupled", "decoupled SCA"),
    ("psychic", "unknown value 'psychic'"),
])
def test_unsupported_sca_approaches_fail_at_start_up(
    tmp_path: Path, approach: str, message: str,
) -> None:
    with pytest.raises(ProfileError, match=message) as info:
        load_profiles([], {BANK: {"berlin_group.sca_approach": approach}})
    assert info.value.key == "berlin_group.sca_approach"
    assert info.value.file.endswith("sandbox-berlin.toml (with overrides)")
