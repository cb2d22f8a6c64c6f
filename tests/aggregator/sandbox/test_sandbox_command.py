from __future__ import annotations

import argparse
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from aggregator import cli
from aggregator.commands import sandbox
from aggregator.sandbox import DEV_CLIENT_ID, DEV_CLIENT_SECRET


def test_sandbox_bank_command_parses_host_and_port() -> None:
    parser = argparse.ArgumentParser()
    sandbox.register(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["sandbox-bank", "--port", "0"])

    assert args.host == "127.0.0.1"
    assert args.port == 0
    assert args.handler is sandbox.run


def test_banner_names_issuer_users_and_dev_client_but_not_its_secret() -> None:
    text = sandbox.banner("http://127.0.0.1:8600")

    assert "http://127.0.0.1:8600" in text
    assert "alice / alice-pass" in text
    assert DEV_CLIENT_ID in text
    assert DEV_CLIENT_SECRET not in text


def test_sandbox_bank_command_plugs_into_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("sandbox",))

    args = cli.build_parser().parse_args(["sandbox-bank", "--port", "8601"])

    assert args.port == 8601
    assert args.handler is sandbox.run


def test_sandbox_bank_command_serves_until_sigterm() -> None:
    code = (
        "import sys, argparse\n"
        "from aggregator.commands import sandbox\n"
        "p = argparse.ArgumentParser(); sandbox.register(p.add_subparsers())\n"
        "a = p.parse_args(['sandbox-bank', '--port', '0'])\n"
        "sys.exit(a.handler(a))\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            issuer_line = process.stdout.readline()
            assert issuer_line.startswith("sandbox bank issuer: http://127.0.0.1:")
            issuer = issuer_line.split(": ", 1)[1].strip()
            doc = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
            assert doc["issuer"] == issuer
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_sandbox_bank_command_serves_the_fapi2_mode(tmp_path: Path) -> None:
    code = (
        "import sys, argparse\n"
        "from aggregator.commands import sandbox\n"
        "p = argparse.ArgumentParser(); sandbox.register(p.add_subparsers())\n"
        "a = p.parse_args(['sandbox-bank', '--port', '0', '--mode', 'fapi2'])\n"
        "sys.exit(a.handler(a))\n"
    )
    # Its client key is generated in the data directory the gateway reads it from.
    env = {**os.environ, "AGGREGATOR_DATA_DIR": str(tmp_path / "data")}
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, cwd=tmp_path, env=env,
    ) as process:
        try:
            assert process.stdout is not None
            issuer = process.stdout.readline().split(": ", 1)[1].strip()
            doc = httpx.get(f"{issuer}/.well-known/openid-configuration").json()
            assert doc["require_pushed_authorization_requests"] is True
            assert doc["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
            assert "ES256" in doc["dpop_signing_alg_values_supported"]
            key = tmp_path / "data" / "sandbox-keys" / "sandbox-fapi2-client.pem"
            assert stat.S_IMODE(key.stat().st_mode) == 0o600
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()
