"""``standard = "obie"`` profiles: what loads, and every mistake named at start-up."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import ProfileError, Standard, load_profiles

UK_BANK = """\
id = "examplebank-uk"
display_name = "Example Bank UK"
country = "GB"
region = "eu"
issuer = "https://auth.examplebank.co.uk"
scopes = ["openid", "accounts"]
standard = "obie"
client_id = "tpp-client"
client_auth_method = "tls_client_auth"
tls_client_cert_file = "transport.pem"
tls_client_key_file = "transport.key"
private_key_file = "signing.key"
signing_alg = "PS256"

[api]
dialect = "obie"
base_url = "https://api.examplebank.co.uk/open-banking/v3.1/aisp"
{obie}
"""


def _write(directory: Path, obie: str = "", **replace: str) -> Path:
    for name in ("transport.pem", "transport.key", "signing.key"):
        (directory / name).write_text("not read by the loader")
    body = UK_BANK.format(obie=obie)
    for key, value in replace.items():
        body = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line
                         for line in body.splitlines()) + "\n"
    (directory / "uk.toml").write_text(body)
    return directory


def test_a_uk_bank_with_mtls_and_a_request_object_key_loads_with_defaults(
    tmp_path: Path,
) -> None:
    profile = load_profiles([_write(tmp_path)], include_builtin=False)["examplebank-uk"]

    assert profile.standard is Standard.OBIE
    assert profile.obie is not None
    assert profile.obie.consents_url == (
        "https://api.examplebank.co.uk/open-banking/v3.1/aisp/account-access-consents")
    assert "ReadBalances" in profile.obie.permissions
    assert profile.obie.acr_values == ("urn:openbanking:psd2:sca",)
    assert not profile.obie.hybrid
    assert profile.consent.max_days == 90  # GB


def test_the_builtin_sandbox_obie_profile_loads() -> None:
    profile = load_profiles([])["sandbox-obie"]
    assert profile.standard is Standard.OBIE
    assert profile.private_key_file is not None


@pytest.mark.parametrize(("obie", "replace", "key", "problem"), [
    ('[obie]\npermissions = ["ReadEverything"]', {}, "obie.permissions", "unknown OBIE"),
    ('[obie]\nresponse_type = "token"', {}, "obie.response_type", "must be one of"),
    ('[obie]\npermissions = []', {}, "obie.permissions", "non-empty"),
    ('[obie]\nconsent_url = "/x"', {}, "obie", "unknown key"),
    ("", {"standard": '"fdx"'}, "standard", "unknown value"),
    ("", {"private_key_file": '"missing.key"'}, "private_key_file", "no such file"),
    ("[obie]", {"standard": '"oauth2"'}, "obie", "only read with standard = 'obie'"),
    ("", {"client_auth_method": '"client_secret_basic"'}, "client_auth_method",
     "private_key_jwt or tls_client_auth"),
])
def test_mistakes_stop_start_up_naming_the_key(
    tmp_path: Path, obie: str, replace: dict[str, str], key: str, problem: str,
) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profiles([_write(tmp_path, obie, **replace)], include_builtin=False)
    assert caught.value.key.startswith(key)
    assert problem in caught.value.problem


def test_a_request_object_needs_a_signing_key_even_with_mtls(tmp_path: Path) -> None:
    directory = _write(tmp_path)
    path = directory / "uk.toml"
    path.write_text("\n".join(line for line in path.read_text().splitlines()
                              if not line.startswith(("private_key_file", "signing_alg"))))
    with pytest.raises(ProfileError, match="signed request objects"):
        load_profiles([directory], include_builtin=False)
