"""Settings: zero configuration, the TOML file, environment overrides, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.erasure import ErasureConfig
from aggregator.errors import ConfigError
from aggregator.settings import load_settings
from vault import LocalKeyringConfig, Pkcs11Config, Secret, TransitConfig


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "aggregator.toml"
    path.write_text(text)
    return path


def test_zero_configuration_is_sqlite_per_region_and_a_local_keyring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert list(settings.regions) == ["eu", "us"]
    eu = settings.region("eu")
    assert eu.database_url == "sqlite+aiosqlite:///var/eu.sqlite3"
    assert eu.keys == LocalKeyringConfig(directory=Path("var/keys"), kek_id="eu")
    assert settings.source == "defaults"


def test_file_chooses_providers_and_secrets_come_from_the_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[regions.eu]
database_url = "postgresql+psycopg://gw@db-eu/gw"
[regions.eu.keys]
provider = "transit"
url = "https://vault.example:8200"
token_env = "VAULT_TOKEN_EU"

[regions.us.keys]
provider = "pkcs11"
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "gw-us"
pin_env = "HSM_PIN_US"
""")
    settings = load_settings(path, environ={"VAULT_TOKEN_EU": "s.tok", "HSM_PIN_US": "1234"})
    eu, us = settings.region("eu"), settings.region("us")
    assert isinstance(eu.keys, TransitConfig)
    assert eu.keys.token == Secret("s.tok")
    assert eu.keys.key_name == "aggregator-eu"
    assert isinstance(us.keys, Pkcs11Config)
    assert us.keys.pin == Secret("1234")
    assert "1234" not in repr(settings)
    assert "s.tok" not in repr(settings)


def test_environment_overrides_per_region_settings(tmp_path: Path) -> None:
    settings = load_settings(None, environ={
        "AGGREGATOR_REGIONS": "eu",
        "AGGREGATOR_DATA_DIR": str(tmp_path),
        "AGGREGATOR_REGION_EU_DATABASE_URL": "postgresql+psycopg://x/eu",
        "AGGREGATOR_REGION_EU_KEYS_KEK_ID": "eu-kek",
    })
    assert list(settings.regions) == ["eu"]
    assert settings.region("eu").database_url == "postgresql+psycopg://x/eu"
    assert settings.region("eu").keys == LocalKeyringConfig(tmp_path / "keys", "eu-kek")


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[regions.eu]\ndatabase_uri = 'x'\n", {}, r"unknown setting regions\.eu\.database_uri"),
        ("[regions.eu.keys]\nprovider = 'kms'\n", {}, r"regions\.eu\.keys\.provider: 'kms'"),
        (
            "[regions.eu.keys]\nprovider = 'pkcs11'\nmodule='m'\ntoken_label='t'\npin_env='PIN'\n",
            {}, r"pin_env names \$PIN, which is not set",
        ),
        ("[regions.eu.keys]\nprovider = 'transit'\nurl='u'\n", {}, "token_env"),
        ("[regions.EU]\n", {}, "2-8 lowercase letters"),
        ("[keys]\ncache_ttl_seconds = -1\n", {}, r"keys\.cache_ttl_seconds"),
        ("not toml [", {}, "not valid TOML"),
        ("", {"AGGREGATOR_REGION_EU_DATABASE_URI": "x"}, "AGGREGATOR_REGION_EU_DATABASE_URI"),
        ("[http]\npublic_uri = 'https://gw.example'\n", {}, r"unknown setting http\.public_uri"),
        ("[http]\npublic_url = 'http://gw.example'\n", {}, r"http\.public_url: .* must use https"),
        ("[http]\npublic_url = 'gw.example'\n", {}, r"http\.public_url: .* absolute http\(s\)"),
        ("[http]\npublic_url = 'ftp://gw.example'\n", {}, r"absolute http\(s\) URL"),
        ("[http]\npublic_url = 'https://gw.example/?next=x'\n", {}, "must not carry"),
        ("[http]\npublic_url = 'https://user:pw@gw.example'\n", {}, "must not carry"),
        ("[http]\npublic_url = 'https://gw.example:99999'\n", {}, "is not a URL"),
        ("[http]\npublic_url = 443\n", {}, r"http\.public_url must be a string"),
        ("http = 'https://gw.example'\n", {}, "http must be a table"),
        ("", {"AGGREGATOR_PUBLIC_URL": "http://gw.example"}, "AGGREGATOR_PUBLIC_URL: .* https"),
    ],
)
def test_bad_settings_name_the_file_and_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(path, environ=env)
    if not env:
        assert str(path) in str(info.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="settings file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_public_url_is_unset_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={}).public_url is None


def test_public_url_comes_from_the_http_table_and_the_environment_wins(tmp_path: Path) -> None:
    path = _write(tmp_path, "[http]\npublic_url = 'https://gateway.example/'\n")
    assert load_settings(path, environ={}).public_url == "https://gateway.example"
    overridden = load_settings(path, environ={"AGGREGATOR_PUBLIC_URL": "https://gw.example/a"})
    assert overridden.public_url == "https://gw.example/a"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000/gw/"],
)
def test_public_url_may_be_plain_http_only_on_loopback(url: str) -> None:
    settings = load_settings(None, environ={"AGGREGATOR_PUBLIC_URL": url})
    assert settings.public_url == url.rstrip("/")


def test_worker_consent_warning_days_default_file_and_environment(tmp_path: Path) -> None:
    assert load_settings(_write(tmp_path, ""), environ={}).worker.consent_warning_days == 7
    path = _write(tmp_path, "[worker]\nconsent_warning_days = 14\n")
    assert load_settings(path, environ={}).worker.consent_warning_days == 14
    env = {"AGGREGATOR_WORKER_CONSENT_WARNING_DAYS": "3"}
    assert load_settings(path, environ=env).worker.consent_warning_days == 3


def test_erasure_revocation_bounds_default_file_and_environment(tmp_path: Path) -> None:
    default = ErasureConfig.from_settings(load_settings(_write(tmp_path, ""), environ={}))
    assert (default.revoke_per_bank, default.revoke_concurrency) == (4, 16)
    path = _write(tmp_path, "[erasure]\nrevoke_per_bank = 2\nrevoke_concurrency = 6\n")
    configured = ErasureConfig.from_settings(load_settings(path, environ={}))
    assert (configured.revoke_per_bank, configured.revoke_concurrency) == (2, 6)
    env = {"AGGREGATOR_ERASURE_REVOKE_PER_BANK": "1"}
    assert load_settings(path, environ=env).erasure_revoke_per_bank == 1


@pytest.mark.parametrize(("text", "message"), [
    ("[erasure]\nrevoke_per_bank = 0\n", r"erasure\.revoke_per_bank must be .* 1 to 32"),
    ("[erasure]\nrevoke_concurrency = 1000\n", r"erasure\.revoke_concurrency must be"),
    ("[erasure]\nrevoke_per_bank = 8\nrevoke_concurrency = 4\n",
     r"erasure\.revoke_concurrency must be at least revoke_per_bank \(8\)"),
    ("[erasure]\nrevoke_parallel = 2\n", r"unknown setting erasure\.revoke_parallel"),
])
def test_bad_erasure_revocation_bounds_name_the_key(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_write(tmp_path, text), environ={})


@pytest.mark.parametrize(("text", "env", "message"), [
    ("[worker]\nconsent_warning_days = 0\n", {}, r"worker\.consent_warning_days must be"),
    ("[worker]\nconsent_warning_days = 7.5\n", {}, r"worker\.consent_warning_days must be"),
    ("[worker]\nconsent_warning_day = 7\n", {}, r"unknown setting worker\.consent_warning_day"),
    ("", {"AGGREGATOR_WORKER_CONSENT_WARNING_DAYS": "a week"},
     "AGGREGATOR_WORKER_CONSENT_WARNING_DAYS must be"),
])
def test_bad_worker_settings_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_write(tmp_path, text), environ=env)


def test_egress_is_strict_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    policy = load_settings(environ={}).egress
    assert policy.allow_http_loopback is False
    assert policy.allowed_networks == ()
    assert policy.url_problem("http://127.0.0.1:8600/") is not None


def test_egress_table_and_environment_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, """
[egress]
allowed_networks = ["10.20.0.0/16"]
allowed_hosts = ["bank-proxy.corp"]
max_response_bytes = 4096
timeout_seconds = 3
""")
    policy = load_settings(path, environ={}).egress
    assert policy.url_problem("https://10.20.1.1/") is None
    assert policy.max_response_bytes == 4096
    assert policy.timeout == 3.0
    assert policy.connect_timeout == 5.0
    env = {"AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK": "true",
           "AGGREGATOR_EGRESS_ALLOWED_NETWORKS": "192.168.5.0/24, 10.1.0.0/16"}
    policy = load_settings(path, environ=env).egress
    assert policy.allow_http_loopback is True
    assert [str(n) for n in policy.allowed_networks] == ["192.168.5.0/24", "10.1.0.0/16"]


@pytest.mark.parametrize(("text", "env", "message"), [
    ('[egress]\nallow_http_loopback = "yes"\n', {}, "egress.allow_http_loopback must be a bool"),
    ('[egress]\nallowed_networks = ["10.0.0.1/8"]\n', {}, "egress.allowed_networks: "),
    ('[egress]\nmax_response_bytes = 0\n', {}, "egress.max_response_bytes must be a positive"),
    ('[egress]\nproxy = "x"\n', {}, "unknown setting egress.proxy"),
    ("", {"AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK": "maybe"}, "AGGREGATOR_EGRESS_ALLOW_HTTP"),
    ("", {"AGGREGATOR_EGRESS_TIMEOUT_SECONDS": "soon"}, "AGGREGATOR_EGRESS_TIMEOUT_SECONDS"),
])
def test_bad_egress_settings_name_the_key(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(_write(tmp_path, text), environ=env)
