"""QSealC-sealed NextGenPSD2 requests, checked by the sandbox over sockets."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from aggregator.sandbox import SandboxBank, SandboxConfig, dev_client
from connectors import (
    BankProfile,
    BankProtocolError,
    ConsentRequest,
    ProfileError,
    UserPresence,
    bank_request_hooks,
    load_profiles,
)
from connectors.consents.berlin_group import BerlinGroupConsents
from tests.connectors.consents.qsealc import make_qsealc

BANK = "sandbox-berlin"
REQUEST = ConsentRequest(callback_url="http://127.0.0.1:8080/link/callback",
                         state="sta_eu_x", presence=UserPresence("192.0.2.7"))


@pytest.fixture
async def bank() -> AsyncIterator[tuple[SandboxBank, str]]:
    served = SandboxBank(SandboxConfig(clients=[dev_client()]))
    served.berlin.require_signatures = True
    async with served.serve() as url:
        yield served, url


def _profile(url: str, cert: Path | None = None, key: Path | None = None) -> BankProfile:
    overrides: dict[str, object] = {"issuer": url}
    if cert is not None:
        overrides["berlin_group.signing_certificate_file"] = str(cert)
        overrides["berlin_group.signing_key_file"] = str(key)
    return load_profiles([], {BANK: overrides})[BANK]


async def test_sealed_requests_pass_and_unsealed_ones_are_refused(
    bank: tuple[SandboxBank, str], tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    served, url = bank
    cert, key = make_qsealc(tmp_path)
    profile = _profile(url, cert, key)
    hooks = bank_request_hooks(profile)
    assert len(hooks) == 1
    async with httpx.AsyncClient(event_hooks={"request": hooks}) as sealed:
        manager = BerlinGroupConsents(profile, None, sealed)
        created = await manager.create(REQUEST)
        assert served.berlin.all()[created.id].status == "received"
        await manager.revoke(created.id)  # a sealed DELETE, with no body
        assert served.berlin.all()[created.id].status == "terminatedByTpp"
    async with httpx.AsyncClient() as plain:
        unsealed = BerlinGroupConsents(profile, None, plain)
        with pytest.raises(BankProtocolError, match="SIGNATURE_MISSING"):
            await unsealed.create(REQUEST)
    assert key.read_text().splitlines()[1] not in caplog.text


async def test_a_seal_by_another_key_is_refused(
    bank: tuple[SandboxBank, str], tmp_path: Path,
) -> None:
    _, url = bank
    cert, _ = make_qsealc(tmp_path, "ours")
    _, other_key = make_qsealc(tmp_path, "theirs")
    profile = _profile(url, cert, other_key)
    async with httpx.AsyncClient(
            event_hooks={"request": bank_request_hooks(profile)}) as http:
        manager = BerlinGroupConsents(profile, None, http)
        with pytest.raises(BankProtocolError, match="SIGNATURE_INVALID"):
            await manager.create(REQUEST)


def test_a_signing_certificate_without_its_key_fails_at_start_up(tmp_path: Path) -> None:
    cert, _ = make_qsealc(tmp_path)
    with pytest.raises(ProfileError, match="exactly one of signing_key_file"):
        load_profiles([], {BANK: {"berlin_group.signing_certificate_file": str(cert)}})
