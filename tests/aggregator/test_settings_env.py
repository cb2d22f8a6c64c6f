"""The one environment table: every variable lands, converts alike, and is documented."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import aggregator.settings
from aggregator.errors import ConfigError
from aggregator.settings import ENV_VARIABLES, REGION_ENV_VARIABLES, load_settings
from aggregator.settings.env import EMPTY_IS_UNSET, env_value

#: A valid value for each global variable, and what the loaded Settings then hold.
_GLOBAL_SAMPLES: dict[str, tuple[str, Any]] = {
    "AGGREGATOR_DATA_DIR": ("/srv/gw", lambda s: s.data_dir == Path("/srv/gw")),
    "AGGREGATOR_PUBLIC_URL": ("https://gw.example/", lambda s: s.public_url == "https://gw.example"),
    "AGGREGATOR_KEYS_ROTATE_EVERY": ("2w", lambda s: s.region("eu").rotate_every.days == 14),
    "AGGREGATOR_ERASURE_DEADLINE_DAYS": ("45", lambda s: s.erasure_deadline_days == 45),
    "AGGREGATOR_ERASURE_REVOKE_PER_BANK": ("2", lambda s: s.erasure_revoke_per_bank == 2),
    "AGGREGATOR_ERASURE_REVOKE_CONCURRENCY": (
        "8", lambda s: s.erasure_revoke_concurrency == 8),
    "AGGREGATOR_WORKER_CONSENT_WARNING_DAYS": (
        " 3 ", lambda s: s.worker.consent_warning_days == 3),
    "AGGREGATOR_RATE_LIMITS_ENABLED": ("FALSE", lambda s: s.rate_limits.enabled is False),
    "AGGREGATOR_RATE_LIMITS_BACKEND": ("database", lambda s: s.rate_limits.backend == "database"),
    "AGGREGATOR_RATE_LIMITS_REDIS_URL": (
        "redis://127.0.0.1:6379/2",
        lambda s: s.rate_limits.redis_url == "redis://127.0.0.1:6379/2"),
    "AGGREGATOR_RATE_LIMITS_TRUSTED_PROXIES": (
        "10.0.0.0/8, ::1", lambda s: [str(n) for n in s.rate_limits.trusted_proxies]
        == ["10.0.0.0/8", "::1/128"]),
    "AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK": ("1", lambda s: s.egress.allow_http_loopback),
    "AGGREGATOR_BANKS_SANDBOX": ("true", lambda s: s.sandbox_banks is True),
    "AGGREGATOR_EGRESS_ALLOWED_NETWORKS": (
        "10.9.0.0/16", lambda s: [str(n) for n in s.egress.allowed_networks] == ["10.9.0.0/16"]),
    "AGGREGATOR_EGRESS_ALLOWED_HOSTS": (
        "a.corp,b.corp,", lambda s: s.egress.allowed_hosts == {"a.corp", "b.corp"}),
    "AGGREGATOR_EGRESS_MAX_RESPONSE_BYTES": ("4096", lambda s: s.egress.max_response_bytes
                                             == 4096),
    "AGGREGATOR_EGRESS_TIMEOUT_SECONDS": ("2.5", lambda s: s.egress.timeout == 2.5),
    "AGGREGATOR_EGRESS_CONNECT_TIMEOUT_SECONDS": ("1", lambda s: s.egress.connect_timeout
                                                  == 1.0),
    "AGGREGATOR_EGRESS_TOTAL_TIMEOUT_SECONDS": ("9", lambda s: s.egress.total_timeout == 9.0),
}


def test_every_global_variable_has_a_sample() -> None:
    assert set(_GLOBAL_SAMPLES) == set(ENV_VARIABLES)


@pytest.mark.parametrize("var", sorted(_GLOBAL_SAMPLES))
def test_each_global_variable_lands_on_its_setting(var: str) -> None:
    text, check = _GLOBAL_SAMPLES[var]
    settings = load_settings(None, environ={"AGGREGATOR_REGIONS": "eu", var: text})
    assert check(settings), var


def test_region_variables_land_on_their_region(tmp_path: Path) -> None:
    env = {
        "AGGREGATOR_REGIONS": "eu", "AGGREGATOR_PUBLIC_URL": "https://gw.example",
        "AGGREGATOR_REGION_EU_DATABASE_URL": "postgresql+psycopg://db/eu",
        "AGGREGATOR_REGION_EU_KEYS_DIRECTORY": str(tmp_path),
        "AGGREGATOR_REGION_EU_KEYS_ROTATE_EVERY": "12h",
        "AGGREGATOR_REGION_EU_PLAID_CLIENT_ID": "cid",
        "AGGREGATOR_REGION_EU_PLAID_SECRET_ENV": "PS", "PS": "plaid-secret",
        "AGGREGATOR_REGION_EU_PLAID_PRODUCTS": "transactions, auth",
        "AGGREGATOR_REGION_EU_PLAID_DAILY_BUDGET": "9",
    }
    eu = load_settings(None, environ=env).region("eu")
    assert eu.database_url == "postgresql+psycopg://db/eu"
    assert eu.rotate_every == timedelta(hours=12)
    assert eu.plaid is not None
    assert eu.plaid.config.products == ("transactions", "auth")
    assert eu.plaid.sync_policy.daily_budget == 9


def test_the_docstring_names_every_variable_and_every_setting() -> None:
    doc = aggregator.settings.__doc__ or ""
    for var, (path, _) in ENV_VARIABLES.items():
        assert f"``{var}``" in doc, var
        assert f"{path[-1]} =" in doc, path
    for suffix, (path, _) in REGION_ENV_VARIABLES.items():
        assert f"``{suffix}``" in doc, suffix
        assert path[-1] in doc, path
    for var in EMPTY_IS_UNSET:
        assert var in doc


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("flag", "True", True), ("flag", "0", False),
    ("list", " a, ,b ", ["a", "b"]), ("list", "", []),
    ("whole", " 7 ", 7), ("whole", "7.5", "7.5"), ("whole", "٣", "٣"),  # left to the section
    ("number", "2.5", 2.5), ("text", " 90d", " 90d"),
])
def test_env_value_converts_each_kind_once(kind: Any, text: str, value: Any) -> None:
    assert env_value("AGGREGATOR_X", text, kind) == value


@pytest.mark.parametrize(("kind", "text", "message"), [
    ("flag", "yes", "AGGREGATOR_X: 'yes' is not true or false"),
    ("number", "soon", "AGGREGATOR_X must be a number, not 'soon'"),
    ("number", "nan", "AGGREGATOR_X must be a number, not 'nan'"),
    ("number", "inf", "AGGREGATOR_X must be a number, not 'inf'"),
])
def test_env_value_refuses_malformed_text_naming_the_variable(
    kind: Any, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        env_value("AGGREGATOR_X", text, kind)


def test_an_empty_variable_applies_unless_it_always_meant_unset(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text('[egress]\nallowed_hosts = ["bank-proxy.corp"]\n'
                    '[http]\npublic_url = "https://gw.example"\n')
    cleared = load_settings(path, environ={"AGGREGATOR_EGRESS_ALLOWED_HOSTS": ""})
    assert cleared.egress.allowed_hosts == frozenset()  # an empty list clears the file's
    kept = load_settings(path, environ={"AGGREGATOR_PUBLIC_URL": "", "AGGREGATOR_REGIONS": ""})
    assert kept.public_url == "https://gw.example"
    assert list(kept.regions) == ["eu", "us"]
    with pytest.raises(ConfigError, match=r"rate_limits\.backend: '' is not one of"):
        load_settings(path, environ={"AGGREGATOR_RATE_LIMITS_BACKEND": ""})
    with pytest.raises(ConfigError, match="AGGREGATOR_KEYS_ROTATE_EVERY: '' is not a duration"):
        load_settings(path, environ={"AGGREGATOR_KEYS_ROTATE_EVERY": ""})


@pytest.mark.parametrize(("text", "env", "message"), [
    ('[worker]\nconsent_warning_days = "7"\n', {},
     r"worker\.consent_warning_days must be a whole number of days from 1 to 90, not '7'"),
    ("", {"AGGREGATOR_ERASURE_DEADLINE_DAYS": "1e3"},
     "AGGREGATOR_ERASURE_DEADLINE_DAYS must be a whole number of days from 1 to 3650"),
    ("", {"AGGREGATOR_REGION_EU_PLAID_DAILY_BUDGET": "x"},
     r"regions\.eu\.plaid\.client_id is required"),
    ("", {"AGGREGATOR_REGIONS": "eu", "AGGREGATOR_REGION_EU_KEYS_TIMEOUT_SECONDS": "5"},
     "AGGREGATOR_REGION_EU_KEYS_TIMEOUT_SECONDS: unknown setting"),
    ("[egress]\ntimeout_seconds = inf\n", {}, r"egress\.timeout_seconds must be a positive"),
    ("[keys]\ncache_ttl_seconds = nan\n", {}, r"keys\.cache_ttl_seconds must be a positive"),
    ("[rate_limits.classes.read]\ncapacity = inf\nrefill_per_second = 1\n", {},
     r"rate_limits\.classes\.read\.capacity must be a positive number"),
    ("data_dir = 5\n", {}, r"data_dir must be a directory path"),
    ('[banks]\ndirectories = "banks.d"\n', {}, r"banks\.directories must be a list of paths"),
    ("regions = 5\n", {"AGGREGATOR_REGION_EU_DATABASE_URL": "x"}, r"regions must be a table"),
])
def test_text_in_the_file_is_not_a_number_and_errors_name_the_source(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(path, environ=env)


def test_the_documented_example_file_loads(tmp_path: Path) -> None:
    doc = aggregator.settings.__doc__ or ""
    block = doc.split("Example ``aggregator.toml`` with every setting::\n", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    path = tmp_path / "aggregator.toml"
    path.write_text("\n".join(lines))
    settings = load_settings(path, environ={"VAULT_TOKEN_EU": "t", "PLAID_SECRET_US": "s"})
    assert settings.public_url == "https://gateway.example"
    assert settings.region("eu").rotate_every == timedelta(days=30)
    assert settings.region("us").plaid is not None
    assert settings.rate_limits.applications["app_7dz2"]["write"].capacity == 600
    assert settings.egress.total_timeout == 30.0
