"""``aggregator demo --headless [--bank B]`` from an empty directory: links, shows, cleans up.

One test per built-in sandbox standard (plain OAuth2, UK Open Banking, Berlin Group,
FAPI 2.0 with DPoP): the same run, then what only that standard must show.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from pathlib import Path

import pytest

from aggregator.commands import demo


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _run_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    *extra: str,
) -> str:
    """Run the demo as a fresh user would (no AGGREGATOR_* variables, an empty directory)
    and return what it printed, after the checks every bank shares."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(name)
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    demo.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", "--headless", *extra])

    assert args.handler(args) == 0

    out = capsys.readouterr().out
    assert re.search(r"GET  gateway /demo/done\?connection_id=con_eu_\w+&outcome=success", out)
    assert "MATCH" in out
    assert "MISMATCH" not in out
    assert "code=" not in out
    assert "PRIVATE KEY" not in out
    for port in re.findall(r"http://127\.0\.0\.1:(\d+)", out):
        assert _port_free(int(port)), f"port {port} still in use after the demo"
    return out


def test_the_headless_demo_links_alice_and_proves_the_sealed_token_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run_demo(tmp_path, monkeypatch, capsys)
    assert "Everyday" in out
    assert "Rainy day" in out
    assert re.search(r"region eu: var/eu\.sqlite3 holds the connection", out)
    assert "region us: var/us.sqlite3 holds none of it" in out
    assert (tmp_path / "var" / "eu.sqlite3").is_file()
    assert (tmp_path / "var" / "keys").is_dir()


def test_the_headless_demo_links_through_an_obie_consent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run_demo(tmp_path, monkeypatch, capsys, "--bank", "sandbox-obie")
    assert "Everyday" in out
    assert "Rainy day" in out
    assert "request=" not in out  # the request object travels by PAR, never in a URL


def test_the_headless_demo_links_through_a_berlin_group_consent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run_demo(tmp_path, monkeypatch, capsys, "--bank", "sandbox-berlin")
    # The OAuth2 SCA approach: the bank's authorization endpoint, scope AIS:{consentId}.
    assert "GET  bank    /authorize?…" in out
    assert re.search(r"Everyday .* EUR", out)
    assert "offline_access without prompt=consent" not in out


def test_the_headless_demo_links_the_fapi2_bank_with_a_dpop_bound_grant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    out = _run_demo(tmp_path, monkeypatch, capsys, "--bank", "sandbox-fapi2")
    assert "Everyday" in out
    assert "Rainy day" in out
    assert "credentials.dpop_key_sealed" in out
    assert re.search(r"the bank bound the access token to: [\w-]{43}  MATCH", out)
