"""A Plaid secret kept in OpenBao's KV v2, read at start-up through the region's Transit
connection (a real OpenBao dev server, tests/vault/_openbao.py)."""

from __future__ import annotations

import dataclasses
import secrets
from pathlib import Path

import httpx
import pytest

from aggregator.errors import ConfigError
from aggregator.plaid.wiring import attach_plaid
from aggregator.settings import PlaidRegion, RegionSettings, Settings, VaultSecretRef
from aggregator.sync import BankDirectory
from connectors import PlaidConfig, PlaidEnvironment, SyncPolicy
from tests.vault._openbao import (
    OpenBao,
    openbao_fixture,  # noqa: F401  (session fixture `openbao`)
)
from vault import Secret

pytestmark = pytest.mark.transit


def _settings(tmp_path: Path, openbao: OpenBao, ref: VaultSecretRef) -> Settings:
    plaid = PlaidRegion(PlaidConfig("us", "cid", Secret(""), PlaidEnvironment.SANDBOX),
                        SyncPolicy(), ref)
    region = RegionSettings("us", f"sqlite+aiosqlite:///{tmp_path / 'us.sqlite3'}",
                            openbao.config("unused-kek"), plaid)
    return Settings(data_dir=tmp_path, regions={"us": region})


async def test_the_secret_is_read_from_kv_at_start_up(tmp_path: Path, openbao: OpenBao) -> None:
    value = secrets.token_urlsafe(24)
    path = f"plaid/{secrets.token_hex(4)}"
    openbao.admin.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"secret": value}, mount_point="secret")
    async with httpx.AsyncClient() as http:
        banks = BankDirectory({}, http)
        assert attach_plaid(banks, _settings(tmp_path, openbao,
                                             VaultSecretRef("secret", path, "secret"))) == ["us"]
        connector = banks.plaid("us")
        assert connector.config.secret == Secret(value)
        connector.close()


@pytest.mark.parametrize(("field", "message"), [("secret", "no such secret"),
                                                ("other", "no non-empty field 'other'")])
async def test_a_missing_secret_stops_start_up_naming_it(
    tmp_path: Path, openbao: OpenBao, field: str, message: str,
) -> None:
    path = f"plaid/{secrets.token_hex(4)}"
    if field == "other":
        openbao.admin.secrets.kv.v2.create_or_update_secret(
            path=path, secret={"secret": "x"}, mount_point="secret")
    ref = VaultSecretRef("secret", path, field)
    async with httpx.AsyncClient() as http:
        with pytest.raises(ConfigError, match=message) as caught:
            attach_plaid(BankDirectory({}, http), _settings(tmp_path, openbao, ref))
    assert path in str(caught.value)
    assert dataclasses.asdict(ref)["mount"] in str(caught.value)
