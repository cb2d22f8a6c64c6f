"""The bank directory gives a bank with a transport certificate its own client, only it."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trustme

from aggregator.bank_profiles import check_profiles
from aggregator.settings import RegionSettings, Settings
from aggregator.sync import BankDirectory
from connectors import EgressPolicy, ProfileError, load_profiles
from vault import LocalKeyringConfig


def _mtls_profile_dir(tmp_path: Path) -> Path:
    ca = trustme.CA()
    issued = ca.issue_cert("gateway@example.test", common_name="gateway")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
    issued.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    (tmp_path / "client.key").chmod(0o600)
    directory = tmp_path / "banks"
    directory.mkdir()
    (directory / "fapi.toml").write_text("""
id = "fapi-bank"
display_name = "FAPI Bank"
country = "GB"
region = "eu"
issuer = "https://auth.fapi.example"
scopes = "accounts"
client_id = "gateway-client"
client_auth_method = "tls_client_auth"
tls_client_cert_file = "../client.crt"
tls_client_key_file = "../client.key"
[api]
dialect = "obie"
base_url = "https://api.fapi.example/open-banking/v3.1/aisp"
""")
    return directory


async def test_only_the_certificate_bank_gets_its_own_client_and_it_is_closed(
    tmp_path: Path,
) -> None:
    profiles = load_profiles([_mtls_profile_dir(tmp_path)])
    async with httpx.AsyncClient() as shared:
        directory = BankDirectory(profiles, shared, environ={}, policy=EgressPolicy())
        own = directory.http_for("fapi-bank")
        assert own is not shared
        assert directory.http_for("fapi-bank") is own  # one per bank, pooled
        assert directory.http_for("sandbox-eu") is shared
        assert directory.oauth("fapi-bank").profile.mutual_tls
        await directory.aclose()
        assert own.is_closed
        assert not shared.is_closed


def test_a_group_readable_transport_key_stops_start_up_naming_the_file(
    tmp_path: Path,
) -> None:
    directory = _mtls_profile_dir(tmp_path)
    (tmp_path / "client.key").chmod(0o640)
    settings = Settings(data_dir=tmp_path, regions={"eu": RegionSettings(
        "eu", f"sqlite+aiosqlite:///{tmp_path / 'eu.sqlite3'}",
        LocalKeyringConfig(tmp_path / "keys", "eu"),
    )}, bank_dirs=(directory,))
    with pytest.raises(ProfileError, match=r"fapi\.toml: tls_client_key_file: .*client\.key"):
        check_profiles(settings)
