"""`aggregator banks list | check`, through a parser built from `register` alone."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from aggregator.commands import banks
from aggregator.errors import ConfigError
from aggregator.sandbox import SandboxBank, SandboxConfig
from aggregator.sandbox.config import DEV_REDIRECT_URIS
from aggregator.sandbox.modes import MODES
from connectors import load_profiles
from tests.aggregator.commands._cli import command_runner


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith(("AGGREGATOR_", "SANDBOX_BANK_"))]:
        monkeypatch.delenv(var)
    # The sandbox banks answer on 127.0.0.1: the development opt-in of the egress policy.
    monkeypatch.setenv("AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK", "true")
    return tmp_path


run = command_runner(banks, prefix=("banks",))


def operator_profile(workdir: Path, **lines: str) -> None:
    directory = workdir / "banks"
    directory.mkdir(exist_ok=True)
    body = {
        "id": '"strict-bank"',
        "display_name": '"Strict Bank"',
        "country": '"FR"',
        "region": '"eu"',
        "issuer": '"http://127.0.0.1:9"',
        "scopes": '"openid accounts"',
        "client_id": '"sandbox-dev-client"',
        "client_auth_method": '"client_secret_basic"',
        "client_secret_env": '"STRICT_SECRET"',
        **lines,
    }
    text = "".join(f"{k} = {v}\n" for k, v in body.items())
    (directory / "strict.toml").write_text(
        text + '[api]\ndialect = "berlin_group"\nbase_url = "/v1"\n'
    )
    (workdir / "aggregator.toml").write_text('[banks]\ndirectories = ["banks"]\n')


def test_list_shows_builtin_banks(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("list") == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "NAME", "REGION", "DIALECT", "ISSUER", "LOADED"]
    eu = next(line for line in lines if line.startswith("sandbox-eu"))
    assert "Sandbox Bank (EU)" in eu
    assert eu.split()[-4:] == ["eu", "obie", "http://127.0.0.1:8600", "no"]
    # Off by default, and the listing says which setting turns the sandboxes on.
    assert any(line.startswith("sandbox-eu: not loaded, sandbox bank, off: set [banks] "
                               "sandbox = true") for line in lines)
    assert any(line.startswith("no bank is offered") for line in lines)


def test_sandbox_banks_are_opt_in(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aggregator.bank_profiles import gateway_profiles
    from aggregator.settings import load_settings

    assert gateway_profiles(load_settings(environ={})) == {}
    (workdir / "aggregator.toml").write_text("[banks]\nsandbox = true\n")
    # Every profile shipped in connectors/banks/ is a sandbox bank, new ones included.
    builtin = set(load_profiles([]))
    assert {"sandbox-eu", "sandbox-us"} <= builtin
    assert set(gateway_profiles(load_settings(environ={}))) == builtin
    (workdir / "aggregator.toml").unlink()
    monkeypatch.setenv("AGGREGATOR_BANKS_SANDBOX", "true")

    assert run("list", "--json") == 0

    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["sandbox-eu"]["loaded"] is True
    assert "AGGREGATOR_BANKS_SANDBOX" in rows["sandbox-eu"]["reason"]


def test_sandbox_setting_must_be_a_flag(workdir: Path) -> None:
    from aggregator.errors import ConfigError
    from aggregator.settings import load_settings

    (workdir / "aggregator.toml").write_text('[banks]\nsandbox = "yes"\n')
    with pytest.raises(ConfigError, match=r"aggregator\.toml: banks\.sandbox must be true"):
        load_settings(environ={})
    with pytest.raises(ConfigError, match="AGGREGATOR_BANKS_SANDBOX"):
        load_settings(environ={"AGGREGATOR_BANKS_SANDBOX": "maybe"})


def test_list_json_includes_operator_profiles(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator_profile(workdir)

    assert run("list", "--json") == 0

    rows = {row["id"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {*load_profiles([]), "strict-bank"}
    assert "sandbox-berlin" in rows
    assert rows["strict-bank"]["dialect"] == "berlin_group"
    assert rows["strict-bank"]["loaded"] is True
    assert rows["strict-bank"]["reason"] == "from [banks] directories: banks"


def test_check_reports_what_the_sandbox_supports(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with SandboxBank().serve_in_thread() as issuer:
        assert run("check", "sandbox-eu", "--issuer", issuer) == 0

    out = capsys.readouterr().out
    assert f"issuer {issuer}" in out
    assert "PKCE S256:           yes" in out
    assert "PAR:                 offered" in out
    assert "iss parameter:       yes" in out
    assert "revocation:          yes" in out
    assert "private_key_jwt" in out
    assert out.rstrip().endswith("compatible")


def test_check_fails_when_the_profile_does_not_fit_the_bank(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    operator_profile(workdir, use_par="false")
    monkeypatch.setenv("STRICT_SECRET", "sandbox-dev-secret")

    with SandboxBank(SandboxConfig(require_par=True)).serve_in_thread() as issuer:
        assert run("check", "strict-bank", "--issuer", issuer) == 1

    out = capsys.readouterr().out
    assert "PAR:                 required" in out
    assert "PROBLEM  par: PAR required, but the profile sets use_par = false" in out
    assert "1 problem(s)" in out


def test_check_reports_missing_credentials_and_unreachable_bank(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    operator_profile(workdir)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    assert (
        run("check", "strict-bank", "--issuer", f"http://127.0.0.1:{port}", "--timeout", "2") == 1
    )

    out = capsys.readouterr().out
    assert "PROBLEM  credentials: " in out
    assert "STRICT_SECRET is not set" in out
    assert "PROBLEM  discovery: " in out


def test_check_reports_fapi2_readiness_of_a_fapi2_bank(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bank registers the key the gateway's check signs with: both generate-or-read it
    # in the data directory (./var here).
    bank = MODES["sandbox-fapi2"](DEV_REDIRECT_URIS, workdir / "var")
    with bank.serve_in_thread() as issuer:
        assert run("check", "sandbox-fapi2", "--issuer", issuer) == 0

    out = capsys.readouterr().out
    assert "FAPI 2.0 readiness (sender_constraint = 'dpop'):" in out
    for line in ("ok       PAR required by the bank", "ok       PKCE S256 only",
                 "ok       iss in the authorization response (RFC 9207)",
                 "ok       DPoP-bound tokens (ES256, EdDSA, PS256)",
                 "ok       client authentication private_key_jwt, offered by the bank"):
        assert line in out
    assert out.rstrip().endswith("compatible")


def test_check_counts_fapi2_gaps_as_problems_only_for_a_fapi2_profile(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with SandboxBank().serve_in_thread() as issuer:
        assert run("check", "sandbox-eu", "--issuer", issuer) == 0  # informational only
        out = capsys.readouterr().out
        assert "warning  the bank does not require PAR" in out
        assert 'warning  tokens are not sender-constrained (sender_constraint = "none")' in out

        operator_profile(workdir, sender_constraint='"dpop"')
        monkeypatch.setenv("STRICT_SECRET", "sandbox-dev-secret")
        assert run("check", "strict-bank", "--issuer", issuer) == 1
    out = capsys.readouterr().out
    assert "PROBLEM  the bank advertises no DPoP algorithm we sign with" in out
    assert "PROBLEM  client authentication must be private_key_jwt or mTLS" in out


def test_check_unknown_bank(workdir: Path) -> None:
    with pytest.raises(ConfigError, match="unknown bank id 'nope'"):
        run("check", "nope")


def test_check_refuses_a_loopback_bank_without_the_development_opt_in(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGGREGATOR_EGRESS_ALLOW_HTTP_LOOPBACK")
    with SandboxBank().serve_in_thread() as issuer:
        assert run("check", "sandbox-eu", "--issuer", issuer) == 1

    out = capsys.readouterr().out
    assert "PROBLEM  discovery: " in out
    assert "egress.allow_http_loopback" in out
