"""``[regions.<name>.plaid]``: per-region Plaid settings, env overrides, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.errors import ConfigError
from aggregator.settings import VaultSecretRef, load_settings
from connectors import PlaidEnvironment
from vault import Secret

PUBLIC = {"AGGREGATOR_PUBLIC_URL": "https://gateway.example"}


def test_file_and_environment_give_each_region_its_plaid(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text("""
[http]
public_url = "https://gateway.example"
[regions.eu]
[regions.us.plaid]
client_id = "cid-us"
secret_env = "PLAID_SECRET_US"
environment = "production"
country_codes = ["US", "CA"]
daily_budget = 6
""")
    settings = load_settings(path, environ={
        "PLAID_SECRET_US": "s3cr3t-us", "PLAID_SECRET_EU": "s3cr3t-eu",
        "AGGREGATOR_REGION_EU_PLAID_CLIENT_ID": "cid-eu",
        "AGGREGATOR_REGION_EU_PLAID_SECRET_ENV": "PLAID_SECRET_EU",
        "AGGREGATOR_REGION_EU_PLAID_COUNTRY_CODES": "gb,fr",
        "AGGREGATOR_REGION_EU_PLAID_HOST": "http://127.0.0.1:9999",
    })
    us, eu = settings.region("us").plaid, settings.region("eu").plaid
    assert us is not None
    assert eu is not None
    assert us.config.environment is PlaidEnvironment.PRODUCTION
    assert us.config.api_host == "https://production.plaid.com"
    assert us.config.secret == Secret("s3cr3t-us")
    assert (us.config.country_codes, us.sync_policy.daily_budget) == (("US", "CA"), 6)
    assert (eu.config.client_id, eu.config.country_codes) == ("cid-eu", ("GB", "FR"))
    assert eu.config.api_host == "http://127.0.0.1:9999"
    assert eu.config.products == ("transactions",)
    assert "s3cr3t" not in repr(settings)


def test_a_region_without_plaid_settings_has_none() -> None:
    assert load_settings(None, environ={}).region("eu").plaid is None


@pytest.mark.parametrize(("env", "message"), [
    ({"AGGREGATOR_REGION_US_PLAID_SECRET_ENV": ""}, "set exactly one of secret_env"),
    ({"AGGREGATOR_REGION_US_PLAID_SECRET_VAULT_PATH": "plaid/us"}, "exactly one"),
    ({"AGGREGATOR_REGION_US_PLAID_SECRET_ENV": "S"}, r"names \$S, which is not set"),
    ({"AGGREGATOR_REGION_US_PLAID_CLIENT_ID": ""}, r"regions\.us\.plaid\.client_id is required"),
    ({"AGGREGATOR_REGION_US_PLAID_ENVIRONMENT": "development"}, "sandbox or production"),
    ({"AGGREGATOR_REGION_US_PLAID_HOST": "http://plaid.example"}, "https URL"),
    ({"AGGREGATOR_REGION_US_PLAID_COUNTRY_CODES": "USA"}, "ISO 3166-1"),
    ({"AGGREGATOR_REGION_US_PLAID_PRODUCTS": "Transactions!"}, "product names"),
    ({"AGGREGATOR_REGION_US_PLAID_DAILY_BUDGET": "0"}, "positive whole number"),
])
def test_bad_plaid_settings_stop_start_up_naming_the_setting(
    env: dict[str, str], message: str
) -> None:
    base = {"AGGREGATOR_REGION_US_PLAID_CLIENT_ID": "c",
            "AGGREGATOR_REGION_US_PLAID_SECRET_ENV": "PLAID_SECRET", "PLAID_SECRET": "x"}
    with pytest.raises(ConfigError, match=message):
        load_settings(None, environ={**PUBLIC, **base, **env})


def test_plaid_needs_the_public_url_for_its_webhooks() -> None:
    with pytest.raises(ConfigError, match="public_url"):
        load_settings(None, environ={"AGGREGATOR_REGION_US_PLAID_CLIENT_ID": "c",
                                     "AGGREGATOR_REGION_US_PLAID_SECRET_ENV": "S", "S": "x"})


def test_unknown_plaid_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text('[regions.us.plaid]\nclient_id = "c"\nsecret = "inline!"\n')
    with pytest.raises(ConfigError, match=r"unknown setting regions\.us\.plaid\.secret"):
        load_settings(path, environ=PUBLIC)


def test_a_vault_held_secret_is_a_reference_read_at_start_up() -> None:
    settings = load_settings(None, environ={
        **PUBLIC, "VT": "root", "AGGREGATOR_REGION_US_KEYS_PROVIDER": "transit",
        "AGGREGATOR_REGION_US_KEYS_URL": "https://vault.example:8200",
        "AGGREGATOR_REGION_US_KEYS_TOKEN_ENV": "VT",
        "AGGREGATOR_REGION_US_PLAID_CLIENT_ID": "c",
        "AGGREGATOR_REGION_US_PLAID_SECRET_VAULT_PATH": "/plaid/us/",
    })
    plaid = settings.region("us").plaid
    assert plaid is not None
    assert plaid.vault_secret == VaultSecretRef("secret", "plaid/us", "secret")
    assert not plaid.config.secret  # empty until read


def test_a_vault_held_secret_needs_the_region_on_transit() -> None:
    with pytest.raises(ConfigError, match=r"keys\.provider"):
        load_settings(None, environ={
            **PUBLIC, "AGGREGATOR_REGION_US_PLAID_CLIENT_ID": "c",
            "AGGREGATOR_REGION_US_PLAID_SECRET_VAULT_PATH": "plaid/us"})


def test_webhook_key_recheck_is_read_and_bounded() -> None:
    from aggregator.settings.plaid import plaid_region

    raw = {"client_id": "cid", "secret_env": "S"}
    assert plaid_region("us", raw, {"S": "x"}, "f.toml").webhook_key_recheck == 300
    assert plaid_region("us", {**raw, "webhook_key_recheck": 60}, {"S": "x"},
                        "f.toml").webhook_key_recheck == 60
    for bad in (0, 3601, "300", True):
        with pytest.raises(ConfigError, match=r"regions\.us\.plaid\.webhook_key_recheck"):
            plaid_region("us", {**raw, "webhook_key_recheck": bad}, {"S": "x"}, "f.toml")
