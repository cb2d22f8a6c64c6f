"""Bank profiles: the built-in ones load, and every invalid file names file + key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors import (
    BUILTIN_PROFILES_DIR,
    ClientAuthMethod,
    ConsentPolicy,
    ParMode,
    ProfileError,
    RefreshPolicy,
    SenderConstraint,
    SyncPolicy,
    load_profiles,
)
from tests.connectors.conftest import VALID_PROFILE, ProfileWriter


def test_builtin_sandbox_profiles_load_for_both_regions() -> None:
    profiles = load_profiles([])

    assert set(profiles) >= {"sandbox-eu", "sandbox-us"}
    eu, us = profiles["sandbox-eu"], profiles["sandbox-us"]
    assert (eu.region, us.region) == ("eu", "us")
    for profile in (eu, us):
        assert profile.issuer == "http://127.0.0.1:8600"
        assert profile.api.dialect == "obie"
        assert profile.api.base_url == "http://127.0.0.1:8600/open-banking/v3.1/aisp"
        assert profile.client_id == "sandbox-dev-client"
        assert profile.client_auth_method is ClientAuthMethod.CLIENT_SECRET_BASIC
        assert profile.client_secret_env == "SANDBOX_BANK_CLIENT_SECRET"
        assert profile.scope == "openid offline_access accounts transactions"
        assert profile.use_par is ParMode.AUTO
        assert [hook.name for hook in profile.hooks] == ["prompt_consent_for_offline_access"]
        assert profile.logo is not None
        assert Path(profile.logo).is_file()
        assert profile.source.parent == BUILTIN_PROFILES_DIR


def test_dev_default_secret_never_shows_in_repr() -> None:
    profile = load_profiles([])["sandbox-eu"]
    assert profile.client_secret_dev_default
    assert profile.client_secret_dev_default not in repr(profile)


def test_operator_directory_adds_profiles(write_profile: ProfileWriter, profile_dir: Path) -> None:
    write_profile()

    profiles = load_profiles([profile_dir])

    example = profiles["example"]
    assert example.scopes == ("openid", "offline_access", "accounts")
    assert example.source == profile_dir / "example.toml"
    assert list(profiles) == sorted(profiles)


def _error(dirs: list[Path], **kwargs: object) -> ProfileError:
    with pytest.raises(ProfileError) as caught:
        load_profiles(dirs, include_builtin=False, **kwargs)  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize(
    ("replace", "key", "problem"),
    [
        ({"issuer": '"http://auth.example.test"'}, "issuer", "loopback"),
        ({"issuer": '"https://auth.example.test/?tenant=1"'}, "issuer", "no query"),
        ({"issuer": '"auth.example.test"'}, "issuer", "not an absolute http(s) URL"),
        ({"issuer": '"https://user:pw@auth.example.test"'}, "issuer", "credentials"),
        ({"client_auth_method": '"client_secret_jwt"'}, "client_auth_method", "unknown value"),
        ({"dialect": '"fints"'}, "api.dialect", "unknown value 'fints'"),
        ({"base_url": '"ftp://api.example.test"'}, "api.base_url", "not an absolute"),
        ({"hooks": '["no_such_hook"]'}, "hooks", "unknown hook 'no_such_hook'"),
        ({"client_id": None}, "client_id", "required key is missing"),
        ({"client_secret_env": None}, "client_secret_env", "required by client_secret_basic"),
        ({"client_secret_env": '"NOT-A-NAME"'}, "client_secret_env", "does not match"),
        ({"country": '"Germany"'}, "country", "does not match"),
        ({"display_name": "42"}, "display_name", "must be a string, not an integer"),
        ({"scopes": '["accounts", "accounts"]'}, "scopes", "twice"),
        ({"scopes": '"accounts bad\\\\scope"'}, "scopes", "not a valid scope token"),
        ({"scopes": "[]"}, "scopes", "at least one scope"),
        ({"hooks": '["expires_in_as_string", "expires_in_as_string"]'}, "hooks", "twice"),
    ],
)
def test_invalid_value_names_file_and_key(
    write_profile: ProfileWriter,
    profile_dir: Path,
    replace: dict[str, str | None],
    key: str,
    problem: str,
) -> None:
    path = write_profile(**replace)

    error = _error([profile_dir])

    assert (error.file, error.key) == (str(path), key)
    assert problem in error.problem
    assert str(error).startswith(f"{path}: {key}: ")


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ('client_secret = "hunter2"', "client_secret", "literal secret is not allowed"),
        ('private_key = "abc"', "private_key", "literal secret is not allowed"),
        (
            'client_key_id = "-----BEGIN PRIVATE KEY-----\\nMIIE\\n"',
            "client_key_id",
            "literal private key",
        ),
        ('clientid = "x"', "clientid", "did you mean 'client_id'"),
        ('use_par = "sometimes"', "use_par", 'true, false or "auto"'),
        ('use_par = "auto"\nallow_plain_pkce = "yes"', "allow_plain_pkce", "boolean"),
        ('logo = "missing.svg"', "logo", "no such file"),
        ('client_secret_dev_default = "dev"', "client_secret_dev_default", "loopback"),
        ('private_key_file = "key.pem"', "private_key_file", "no such file"),
        ('[extra_authorize_params]\nstate = "fixed"', "extra_authorize_params.state", "set by"),
        ('[endpoints]\ntokens = "https://a.test/t"', "endpoints.tokens", "unknown key"),
        ("discovery = false", "endpoints.authorization", "required key is missing"),
        ("[sync]\nevery = 3", "sync.every", "unknown key"),
        ("[sync]\ninterval_hour = 3", "sync.interval_hour", "did you mean 'interval_hours'"),
        ("[sync]\ndaily_budget = 0", "sync.daily_budget", "between 1 and 96"),
        ("[sync]\ndaily_budget = 4.5", "sync.daily_budget", "must be an integer"),
        ("[sync]\ninterval_hours = true", "sync.interval_hours", "must be an integer"),
        ("sync = 4", "sync", "must be a table"),
        ("[sync]\nreserve = 4", "sync.reserve", "between 0 and 3"),
        ("[sync]\ndaily_budget = 2\nreserve = 2", "sync.reserve", "between 0 and 1"),
        ("[sync]\nreserve = -1", "sync.reserve", "between 0 and 3"),
        ("[consent]\nmax_days = 0", "consent.max_days", "between 1 and 730"),
        ("[consent]\nmax_days = \"90\"", "consent.max_days", "must be an integer"),
        ("[consent]\nexpiry_field = \"a b\"", "consent.expiry_field", "does not match"),
        ("[consent]\ndays = 90", "consent.days", "unknown key"),
        ("[refresh]\nmin_interval_seconds = 0", "refresh.min_interval_seconds",
         "between 1 and 86400"),
        ("[refresh]\nmin_lifetime_percent = 95", "refresh.min_lifetime_percent",
         "between 0 and 90"),
        ("[refresh]\nevery = 3", "refresh.every", "unknown key"),
        ('sender_constraint = "bearer"', "sender_constraint", "unknown value 'bearer'"),
        ('sender_constraint = "mtls"', "sender_constraint", "tls_client_cert_file"),
    ],
)
def test_invalid_addition_names_file_and_key(
    write_profile: ProfileWriter, profile_dir: Path, extra: str, key: str, problem: str
) -> None:
    base = VALID_PROFILE.format(id="example")
    # A table header must come last; a plain key must come before the [api] table.
    text = base + extra + "\n" if extra.startswith("[") else extra + "\n" + base
    path = write_profile(text)

    error = _error([profile_dir])

    assert (error.file, error.key) == (str(path), key)
    assert problem in error.problem


def test_sync_policy_defaults_to_psd2_four_unattended_calls_a_day(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile()

    profile = load_profiles([profile_dir], include_builtin=False)["example"]

    assert profile.sync == SyncPolicy(interval_hours=6, daily_budget=4)


def test_sync_table_sets_the_bank_budget(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile(VALID_PROFILE.format(id="example") + "\n[sync]\ninterval_hours = 12\n"
                  "daily_budget = 2\n")

    profile = load_profiles([profile_dir], include_builtin=False)["example"]

    assert profile.sync == SyncPolicy(interval_hours=12, daily_budget=2, reserve=1)


def test_a_budget_of_one_keeps_no_reserve_by_default(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile(VALID_PROFILE.format(id="example") + "\n[sync]\ndaily_budget = 1\n")

    profile = load_profiles([profile_dir], include_builtin=False)["example"]

    assert profile.sync == SyncPolicy(daily_budget=1, reserve=0)


@pytest.mark.parametrize(("country", "days"), [("GB", 90), ("DE", 180), ("NO", 180),
                                               ("US", None)])
def test_consent_lasts_the_regulated_period_of_the_bank_country(
    write_profile: ProfileWriter, profile_dir: Path, country: str, days: int | None
) -> None:
    write_profile(country=f'"{country}"')

    profile = load_profiles([profile_dir], include_builtin=False)["example"]

    assert profile.consent == ConsentPolicy(max_days=days)


def test_consent_table_overrides_the_period_and_names_the_bank_field(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile(VALID_PROFILE.format(id="example")
                  + '\n[consent]\nmax_days = 30\nexpiry_field = "consent_expires_at"\n')

    consent = load_profiles([profile_dir], include_builtin=False)["example"].consent

    assert consent == ConsentPolicy(max_days=30, expiry_field="consent_expires_at")


def test_literal_secret_value_is_not_echoed(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile('client_secret = "hunter2-very-secret"\n' + VALID_PROFILE.format(id="example"))

    assert "hunter2" not in str(_error([profile_dir]))


def test_private_key_jwt_needs_exactly_one_key_reference(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile(client_auth_method='"private_key_jwt"', client_secret_env=None)

    error = _error([profile_dir])

    assert error.key == "private_key_pem_env"
    assert "exactly one of" in error.problem


def test_secret_method_refuses_key_settings(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile('private_key_pem_env = "KEY"\n' + VALID_PROFILE.format(id="example"))

    error = _error([profile_dir])

    assert error.key == "private_key_pem_env"
    assert "only used with private_key_jwt" in error.problem


def test_toml_syntax_error_names_the_file(write_profile: ProfileWriter, profile_dir: Path) -> None:
    path = write_profile("id = \n")

    error = _error([profile_dir])

    assert (error.file, error.key) == (str(path), "(syntax)")


def test_a_file_that_is_not_utf8_names_the_file(profile_dir: Path) -> None:
    # Found by tests/fuzz/harness_profile.py: tomllib's UnicodeDecodeError escaped.
    path = profile_dir / "latin1.toml"
    path.write_bytes('display_name = "Crédit"\n'.encode("latin-1"))

    error = _error([profile_dir])

    assert (error.file, error.key) == (str(path), "(file)")
    assert "UTF-8" in error.problem


def test_duplicate_ids_across_directories_name_both_files(
    write_profile: ProfileWriter, profile_dir: Path, tmp_path: Path
) -> None:
    first = write_profile()
    other_dir = tmp_path / "more"
    other_dir.mkdir()
    second = other_dir / "copy.toml"
    second.write_text(first.read_text())

    error = _error([profile_dir, other_dir])

    assert (error.file, error.key) == (str(second), "id")
    assert str(first) in error.problem


def test_operator_profile_cannot_reuse_a_builtin_id(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile(VALID_PROFILE.format(id="sandbox-eu"), name="mine")

    with pytest.raises(ProfileError, match="duplicate bank id 'sandbox-eu'"):
        load_profiles([profile_dir])


def test_missing_directory_is_reported(tmp_path: Path) -> None:
    error = _error([tmp_path / "nope"])

    assert error.key == "(directory)"


def test_overrides_replace_values_before_validation() -> None:
    profiles = load_profiles(
        [],
        {"sandbox-eu": {"issuer": "http://127.0.0.1:9123", "api.dialect": "berlin_group"}},
    )

    eu = profiles["sandbox-eu"]
    assert eu.issuer == "http://127.0.0.1:9123"
    assert eu.api.base_url == "http://127.0.0.1:9123/open-banking/v3.1/aisp"
    assert eu.api.dialect == "berlin_group"
    assert profiles["sandbox-us"].issuer == "http://127.0.0.1:8600"


def test_override_none_removes_a_key() -> None:
    profile = load_profiles([], {"sandbox-eu": {"logo": None}})["sandbox-eu"]

    assert profile.logo is None


def test_invalid_override_is_attributed_to_the_override() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profiles([], {"sandbox-us": {"issuer": "http://bank.example.test"}})

    assert caught.value.key == "issuer"
    assert caught.value.file.endswith("sandbox-us.toml (with overrides)")


def test_override_for_unknown_bank_fails() -> None:
    with pytest.raises(ProfileError) as caught:
        load_profiles([], {"no-such-bank": {"issuer": "https://x.test"}})

    assert (caught.value.file, caught.value.key) == ("(overrides)", "no-such-bank")


def test_explicit_endpoints_without_discovery(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    endpoints = (
        '[endpoints]\nauthorization = "https://auth.example.test/authorize"\n'
        'token = "https://auth.example.test/token"\n'
    )
    write_profile("discovery = false\n" + VALID_PROFILE.format(id="example") + endpoints)

    profile = load_profiles([profile_dir], include_builtin=False)["example"]

    assert profile.discovery is False
    assert profile.endpoints.token == "https://auth.example.test/token"
    assert profile.endpoints.par is None


def test_the_bank_answer_wins_over_the_consent_period() -> None:
    granted = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    answered = datetime(2026, 5, 1, tzinfo=UTC)

    assert ConsentPolicy(max_days=90).expires_at(granted) == granted + timedelta(days=90)
    assert ConsentPolicy(max_days=90).expires_at(granted, answered) == answered
    assert ConsentPolicy().expires_at(granted, answered) == answered
    assert ConsentPolicy().expires_at(granted) is None


def test_api_resources_default_to_all_and_list_what_the_bank_offers(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile(VALID_PROFILE.format(id="example"))
    assert load_profiles([profile_dir], include_builtin=False)["example"].api.resources == (
        "balances", "transactions")
    write_profile(VALID_PROFILE.format(id="example") + 'resources = ["transactions"]\n')
    profile = load_profiles([profile_dir], include_builtin=False)["example"]
    assert profile.api.resources == ("transactions",)
    assert profile.refresh == RefreshPolicy(min_interval_seconds=60, min_lifetime_percent=50)


@pytest.mark.parametrize(("value", "problem"), [
    ('["standing_orders"]', "must be an array of balances, transactions"),
    ('"balances"', "must be an array"),
    ('["balances", "balances"]', "lists a resource twice"),
])
def test_api_resources_outside_the_known_ones_fail_at_start_up(
    write_profile: ProfileWriter, profile_dir: Path, value: str, problem: str
) -> None:
    path = write_profile(VALID_PROFILE.format(id="example") + f"resources = {value}\n")

    error = _error([profile_dir])

    assert (error.file, error.key) == (str(path), "api.resources")
    assert problem in error.problem
def test_sender_constraint_defaults_to_none_and_package_files_are_no_key(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile()
    assert load_profiles([profile_dir], include_builtin=False)["example"].sender_constraint \
        is SenderConstraint.NONE
    assert load_profiles([])["sandbox-fapi2"].sender_constraint is SenderConstraint.DPOP
    inside = BUILTIN_PROFILES_DIR / "sandbox-eu.toml"  # anything the package ships is public
    text = VALID_PROFILE.format(id="example").replace(
        'client_auth_method = "client_secret_basic"\nclient_secret_env = "EXAMPLE_SECRET"\n',
        f'client_auth_method = "private_key_jwt"\nprivate_key_file = "{inside}"\n',
    )
    path = write_profile(text)
    error = _error([profile_dir])
    assert (error.file, error.key) == (str(path), "private_key_file")
    assert "public" in error.problem


def test_no_private_key_ships_with_the_package() -> None:
    for path in BUILTIN_PROFILES_DIR.rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    for bank in ("sandbox-fapi2", "sandbox-obie"):
        profile = load_profiles([])[bank]
        assert profile.dev_private_key is not None
        assert profile.private_key_file is None  # the application generates it


def _dev_key_profile(issuer: str, extra: str = 'signing_alg = "ES256"\n') -> str:
    return VALID_PROFILE.format(id="example").replace(
        'client_auth_method = "client_secret_basic"\nclient_secret_env = "EXAMPLE_SECRET"\n',
        f'client_auth_method = "private_key_jwt"\ndev_private_key = "example-dev"\n{extra}',
    ).replace('issuer = "https://auth.example.test"', f'issuer = "{issuer}"')


def test_a_generated_dev_key_is_refused_for_a_bank_off_loopback(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    path = write_profile(_dev_key_profile("https://auth.example.test"))
    error = _error([profile_dir])
    assert (error.file, error.key) == (str(path), "dev_private_key")
    assert "loopback" in error.problem
    # The same profile pointed at loopback loads, and names the key it needs.
    write_profile(_dev_key_profile("http://127.0.0.1:8999"))
    profile = load_profiles([profile_dir], include_builtin=False)["example"]
    assert (profile.dev_private_key, profile.private_key_file) == ("example-dev", None)


def test_a_generated_dev_key_needs_its_algorithm_and_no_other_key(
    write_profile: ProfileWriter, profile_dir: Path
) -> None:
    write_profile(_dev_key_profile("http://127.0.0.1:8999", extra=""))
    assert _error([profile_dir]).key == "signing_alg"
    write_profile(_dev_key_profile(
        "http://127.0.0.1:8999", extra='signing_alg = "ES256"\nprivate_key_pem_env = "K"\n'))
    assert _error([profile_dir]).key == "dev_private_key"


def test_the_readme_fapi2_profile_example_loads(profile_dir: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### A FAPI 2.0 bank", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (profile_dir / "examplebank-fapi2.toml").write_text(example, encoding="utf-8")

    profile = load_profiles([profile_dir], include_builtin=False)["examplebank-fapi2"]

    assert profile.sender_constraint is SenderConstraint.DPOP
    assert profile.use_par is ParMode.ALWAYS
    assert profile.client_auth_method is ClientAuthMethod.PRIVATE_KEY_JWT
