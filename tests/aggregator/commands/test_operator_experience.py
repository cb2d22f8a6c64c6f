"""What an operator meets first (issue 17): help and version, errors that name the setting
and the fix without a traceback, readable logs, private data files."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from aggregator.cli import build_parser, main
from aggregator.errors import ConfigError
from aggregator.http.logs import configure_logging
from aggregator.settings import load_settings


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(var)
    return tmp_path


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed entry point, as an operator runs it (a fresh interpreter)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}
    return subprocess.run([sys.executable, "-m", "aggregator", *argv], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=60, check=False)


def test_bare_command_prints_help_and_version_is_known(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 0
    assert "usage: aggregator" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == "aggregator 0.1.0"


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, [*path, name])
    return found


def test_every_command_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    commands = _commands(build_parser(), [])
    assert ["apps", "rotate-key"] in commands
    assert ["dev"] in commands
    for command in commands:
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        assert "examples:\n  aggregator " in capsys.readouterr().out, command


def test_postgres_scheme_names_the_variable_and_the_fix(workdir: Path) -> None:
    done = cli("migrate", env={"AGGREGATOR_REGION_EU_DATABASE_URL": "postgres://gw:pw@db/gw"})
    assert done.returncode == 2
    assert done.stderr.startswith("aggregator: error: AGGREGATOR_REGION_EU_DATABASE_URL: "
                                  "region eu's database URL scheme 'postgres'")
    assert "postgresql+psycopg://" in done.stderr
    assert "Traceback" not in done.stderr
    assert "pw" not in done.stderr


def test_file_setting_names_the_file_key(workdir: Path) -> None:
    (workdir / "aggregator.toml").write_text('[regions.us]\ndatabase_url = "sqlite:///x.db"\n')
    with pytest.raises(ConfigError, match=r"aggregator\.toml: regions\.us\.database_url: .*"
                                          r"sqlite\+aiosqlite://"):
        load_settings(environ={})


def test_key_provider_made_by_a_variable_is_blamed_on_it(workdir: Path) -> None:
    with pytest.raises(ConfigError, match=r"^AGGREGATOR_REGION_US_KEYS_PROVIDER: 'hsm'"):
        load_settings(environ={"AGGREGATOR_REGION_US_KEYS_PROVIDER": "hsm"})
    # Not set anywhere, without a settings file: the key and its variable, not "defaults".
    with pytest.raises(ConfigError, match=r"^regions\.eu\.keys\.url \(no settings file; or "
                                          r"AGGREGATOR_REGION_EU_KEYS_URL\) is required"):
        load_settings(environ={"AGGREGATOR_REGION_EU_KEYS_PROVIDER": "transit",
                               "AGGREGATOR_REGION_EU_KEYS_TOKEN_ENV": "VT", "VT": "t"})


def test_unreachable_database_names_region_setting_and_fix(workdir: Path) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    done = cli("apps", "list", env={
        "AGGREGATOR_REGIONS": "eu",
        "AGGREGATOR_REGION_EU_DATABASE_URL": "postgresql+psycopg://gw:hunter2@127.0.0.1:9/gw"})
    assert done.returncode == 2, done.stderr
    assert "region eu: cannot reach its database postgresql+psycopg://gw:***@127.0.0.1:9/gw" \
        in done.stderr
    assert "AGGREGATOR_REGION_EU_DATABASE_URL" in done.stderr
    assert "Traceback" not in done.stderr
    assert "hunter2" not in done.stderr


def test_console_logs_are_readable_and_json_stays_the_default_off_a_terminal() -> None:
    stream = io.StringIO()
    configure_logging("info", stream)
    logging.getLogger("aggregator.test").info("refreshed", extra={"fields": {
        "connection_id": "con_eu_x", "outcome": "ok", "absent": None}})
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    assert json.loads(stream.getvalue())["message"] == "refreshed"
    stream = io.StringIO()
    configure_logging("info", stream, log_format="console")
    logging.getLogger("aggregator.test").info("refreshed", extra={"fields": {
        "connection_id": "con_eu_x", "outcome": "ok", "absent": None}})
    line = stream.getvalue()
    assert "INFO    aggregator.test  refreshed connection_id=con_eu_x outcome=ok" in line
    assert "absent" not in line
    assert "Context impl" not in line


def test_data_files_and_directories_are_private(workdir: Path) -> None:
    done = cli("keys", "init", env={"AGGREGATOR_DATA_DIR": "data/gw"})
    assert done.returncode == 0, done.stderr
    done = cli("migrate", env={"AGGREGATOR_DATA_DIR": "data/gw"})
    assert done.returncode == 0, done.stderr
    for path in (workdir / "data", workdir / "data" / "gw", workdir / "data" / "gw" / "keys"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    for path in (workdir / "data" / "gw").glob("*.sqlite3*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "Context impl" not in done.stderr


def test_keys_status_reads_as_words_and_never_claims_a_rotation(workdir: Path) -> None:
    for step in (["keys", "init"], ["migrate"]):
        assert cli(*step).returncode == 0
    done = cli("keys", "status")
    assert done.returncode == 0, done.stderr
    assert "None" not in done.stdout
    assert "{}" not in done.stdout
    assert "[1]" not in done.stdout
    assert "last rotation            never (still the first KEK version)" in done.stdout
    assert json.loads(cli("keys", "status", "--json").stdout)["eu"]["last_rotation"] is None


def test_dev_refuses_a_gateway_port_a_sandbox_bank_needs(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", "--port", "8610"]) == 2
    assert "--port 8610 is not a free TCP port for the gateway (8600, 8601, 8610" in \
        capsys.readouterr().err
    assert not (workdir / "var").exists()  # refused before preparing anything
