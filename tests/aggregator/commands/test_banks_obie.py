"""``aggregator banks check`` for a UK Open Banking profile: what the bank must offer."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.sandbox import SandboxBank
from aggregator.sandbox.obie import ObieSandboxBank
from tests.aggregator.commands.test_banks import run, workdir  # noqa: F401 - the fixture


def test_the_obie_sandbox_offers_what_an_obie_profile_needs(
    workdir: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    with ObieSandboxBank().serve_in_thread() as issuer:
        assert run("check", "sandbox-obie", "--issuer", issuer) == 0

    out = capsys.readouterr().out
    assert "UK Open Banking (standard = 'obie'):" in out
    assert "ok       client_credentials grant offered" in out
    assert "ok       PS256 request objects accepted" in out
    assert "ok       claims parameter supported (openbanking_intent_id)" in out
    assert out.rstrip().endswith("compatible")


def test_a_plain_oauth_bank_cannot_serve_an_obie_profile(
    workdir: Path, capsys: pytest.CaptureFixture[str],  # noqa: F811
) -> None:
    with SandboxBank().serve_in_thread() as issuer:
        assert run("check", "sandbox-obie", "--issuer", issuer) == 1

    out = capsys.readouterr().out
    assert "PROBLEM  no client_credentials grant for the consent API" in out
    assert "PROBLEM  claims_parameter_supported is not true" in out
    assert "PROBLEM  PS256 not in request_object_signing_alg_values_supported" in out
