"""`aggregator keys rotate --rewrap --retire`, `keys rewrap` and `keys status` on a
migrated region, SQLite and PostgreSQL: progress on stderr, refusals naming the region."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from aggregator.applications import create_application
from aggregator.cli import main
from aggregator.custody import open_custody
from aggregator.keyring import LocalKeyringInProductionWarning
from aggregator.models import AuditEvent
from aggregator.models.base import utcnow
from aggregator.settings import load_settings
from aggregator.store import RegionRouter
from aggregator.users import create_user
from aggregator.worker import rotation
from aggregator.worker.rotation import KeyRotation
from tests.vault._openbao import openbao_fixture  # noqa: F401  (session fixture `openbao`)
from tests.vault._softhsm import softhsm_fixture  # noqa: F401  (session fixture `softhsm`)
from vault import open_provider


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def workdir(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("AGGREGATOR_REGIONS", "eu")
    if request.param == "postgres":
        urls = request.getfixturevalue("clean_postgres")
        monkeypatch.setenv("AGGREGATOR_REGION_EU_DATABASE_URL", urls["eu"])
    return tmp_path


def cli(*argv: str) -> int:
    with warnings.catch_warnings():  # a test keyring in front of a server database
        warnings.simplefilter("ignore", LocalKeyringInProductionWarning)
        return main(list(argv))


async def _users(n: int) -> None:
    settings = load_settings(environ=dict(os.environ))
    async with RegionRouter(settings) as router:
        custody = await open_custody(router, settings)
        app_id, _ = await create_application(router, "Budgetly", [])
        async with router.session("eu") as session, session.begin():
            for i in range(n):
                await create_user(session, custody["eu"], app_id, f"person-{i}")
        custody["eu"].close()


def _ready(n: int) -> None:
    assert cli("keys", "init") == 0
    assert cli("migrate") == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LocalKeyringInProductionWarning)
        asyncio.run(_users(n))


def _status(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert cli("keys", "status", "--json") == 0
    report: dict[str, Any] = json.loads(capsys.readouterr().out)["eu"]
    return report


def test_rotate_rewrap_retire_moves_every_key_and_shows_progress(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ready(7)
    before = _status(capsys)
    assert before["data_keys_by_version"] == {"1": 7}
    assert before["rewrap_pending"] == 0
    assert before["rotate_every"] == "off"

    assert cli("keys", "rotate", "--region", "eu", "--rewrap", "--retire", "--batch", "3") == 0
    out, err = capsys.readouterr()
    assert "eu: KEK 'eu' rotated to version 2" in out
    assert "8 keys rewrapped to KEK version 2" in out  # 7 data keys and the pepper
    assert "versions below 2 retired" in out
    assert "rewrapping to KEK v2" in err  # the progress bar, on stderr
    assert "8/8" in err

    after = _status(capsys)
    assert after["data_keys_by_version"] == {"2": 7}
    assert after["rewrap_pending"] == 0
    assert after["min_decryption_version"] == 2
    assert after["last_rotation"] is not None
    assert cli("migrate") == 0  # the pepper still unwraps under the raised minimum


def test_retire_is_refused_while_a_key_uses_an_older_version(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ready(3)
    capsys.readouterr()
    assert cli("keys", "rotate", "--region", "eu", "--retire") == 2
    out, err = capsys.readouterr()
    assert "rotated to version 2" in out
    assert "region eu: 4 data keys or region secrets still use KEK versions below 2" in err
    assert "nothing was retired" in err
    assert _status(capsys)["min_decryption_version"] == 1
    assert _status(capsys)["rewrap_pending"] == 4

    assert cli("keys", "rewrap", "--region", "eu", "--retire") == 0  # resumes, no new version
    report = _status(capsys)
    assert report["latest_version"] == 2
    assert report["min_decryption_version"] == 2
    assert report["data_keys_by_version"] == {"2": 3}


def test_a_rewrap_is_refused_while_a_worker_holds_the_regions_lease(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _ready(1)
    settings = load_settings(environ=dict(os.environ))

    async def worker_claims() -> None:
        async with RegionRouter(settings) as router:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", LocalKeyringInProductionWarning)
                provider = open_provider(settings.region("eu").keys)
            assert await rotation.claim(router, "eu", provider, "host-a:4242",
                                        now=utcnow(), lease=timedelta(minutes=5),
                                        newest=1)

    asyncio.run(worker_claims())
    capsys.readouterr()
    assert cli("keys", "rewrap", "--region", "eu") == 2
    err = capsys.readouterr().err
    assert "region eu: host-a:4242 is rotating or rewrapping its KEK until" in err


def test_status_shows_the_schedule_and_bad_periods_name_the_field(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _ready(2)
    monkeypatch.setenv("AGGREGATOR_REGION_EU_KEYS_ROTATE_EVERY", "90d")
    settings = load_settings(environ=dict(os.environ))
    assert settings.region("eu").rotate_every == timedelta(days=90)

    async def one_pass() -> None:
        async with RegionRouter(settings) as router:
            custody = await open_custody(router, settings)
            job = KeyRotation(router, custody, {"eu": timedelta(days=90)})
            await job.run_once(asyncio.Event())
            custody["eu"].close()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LocalKeyringInProductionWarning)
        asyncio.run(one_pass())
    report = _status(capsys)
    assert report["rotate_every"] == "90d"
    # The worker's first look starts the schedule; it is not a rotation (issue 17).
    assert report["last_rotation"] is None
    assert report["next_rotation_due"] is not None

    monkeypatch.setenv("AGGREGATOR_REGION_EU_KEYS_ROTATE_EVERY", "90 days")
    assert cli("keys", "status") == 2
    err = capsys.readouterr().err
    assert "AGGREGATOR_REGION_EU_KEYS_ROTATE_EVERY: '90 days' is not a duration" in err


@pytest.mark.parametrize("kind", [pytest.param("transit", marks=pytest.mark.transit),
                                  pytest.param("pkcs11", marks=pytest.mark.hsm)])
def test_rotate_rewrap_retire_on_openbao_and_softhsm(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest, kind: str,
) -> None:
    name = f"cli-{uuid.uuid4().hex[:10]}"
    if kind == "transit":
        bao = request.getfixturevalue("openbao")
        monkeypatch.setenv("TEST_BAO_TOKEN", bao.root_token.reveal())
        keys = (f'provider = "transit"\nurl = "{bao.url}"\nkey_name = "{name}"\n'
                'token_env = "TEST_BAO_TOKEN"\n')
    else:
        hsm = request.getfixturevalue("softhsm")
        monkeypatch.setenv("TEST_HSM_PIN", hsm.pin.reveal())
        keys = (f'provider = "pkcs11"\nmodule = "{hsm.module}"\n'
                f'token_label = "{hsm.token_label}"\npin_env = "TEST_HSM_PIN"\n'
                f'kek_label = "{name}"\n')
    config = workdir / "aggregator.toml"
    config.write_text(f"[regions.eu.keys]\n{keys}")
    _ready(4)

    assert cli("keys", "rotate", "--region", "eu", "--rewrap", "--retire") == 0
    out = capsys.readouterr().out
    assert "5 keys rewrapped to KEK version 2" in out
    report = _status(capsys)
    assert report["provider"] == kind
    assert report["data_keys_by_version"] == {"2": 4}
    assert report["min_decryption_version"] == 2
    assert cli("migrate") == 0  # the pepper unwraps under the raised minimum
    assert cli("audit", "verify", "--region", "eu") == 0
    actions = asyncio.run(_audit_actions())
    assert actions.count("kek.rotated") == 1
    assert actions.count("kek.versions_retired") == 1


async def _audit_actions() -> list[str]:
    settings = load_settings(environ=dict(os.environ))
    async with RegionRouter(settings) as router, router.reader("eu") as session:
        return list((await session.execute(select(AuditEvent.action))).scalars())
