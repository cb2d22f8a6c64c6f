"""The Compose deployment's OpenBao set-up, against a real OpenBao server (not dev mode).

The server runs with ``deploy/openbao.hcl`` (file storage, TLS from
:mod:`aggregator.bootstrap.certs`), only its paths and port moved to a temporary
directory and loopback. :mod:`aggregator.bootstrap.openbao` initialises, unseals and
configures it; the gateway's Transit provider then logs in with the AppRole it made; a
restart leaves the server sealed, the bootstrap unseals it, and a data key made before
the restart still unwraps: the keys persist, unlike dev mode's.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from aggregator.bootstrap.certs import make_certificates
from aggregator.bootstrap.openbao import BootstrapError, Plan, bootstrap
from tests.vault._openbao import find_bao, free_port_pair
from vault import Secret, TransitConfig
from vault.transit import TransitProvider

pytestmark = pytest.mark.transit
ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def server(bao: Path, workdir: Path, port: int) -> Iterator[str]:
    config = (ROOT / "deploy" / "openbao.hcl").read_text()
    (workdir / "data").mkdir(mode=0o700, exist_ok=True)
    config = (config.replace("/openbao/data", str(workdir / "data"))
              .replace("/openbao/tls", str(workdir / "tls"))
              .replace("0.0.0.0:8200", f"127.0.0.1:{port}")
              .replace("0.0.0.0:8201", f"127.0.0.1:{port + 1}")
              .replace("https://vault:8200", f"https://127.0.0.1:{port}")
              .replace("https://vault:8201", f"https://127.0.0.1:{port + 1}"))
    (workdir / "openbao.hcl").write_text(config)
    env = {"HOME": str(workdir), "PATH": "/usr/bin:/bin", "CHECKPOINT_DISABLE": "1"}
    with (workdir / "bao.log").open("ab") as log:
        proc = subprocess.Popen([str(bao), "server", f"-config={workdir / 'openbao.hcl'}"],
                                env=env, cwd=workdir, stdout=log, stderr=log)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert proc.poll() is None, (workdir / "bao.log").read_text()[-2000:]
            with contextlib.suppress(requests.RequestException):
                # 501: not initialised, 503: sealed; either way it answers.
                requests.get(f"{url}/v1/sys/health", verify=str(workdir / "tls" / "ca.crt"),
                             timeout=0.5)
                break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bootstrap_initialises_unseals_and_survives_a_restart(tmp_path: Path) -> None:
    bao = find_bao()
    if bao is None:
        pytest.skip("OpenBao binary `bao` not found")
    assert make_certificates(tmp_path / "tls", ("127.0.0.1", "localhost"))
    assert not make_certificates(tmp_path / "tls")  # idempotent: the CA clients trust stays
    assert stat.S_IMODE((tmp_path / "tls" / "server.key").stat().st_mode) == 0o600
    port = free_port_pair()
    ca = str(tmp_path / "tls" / "ca.crt")
    plan = Plan(address=f"https://127.0.0.1:{port}", ca_cert=ca,
                init_file=tmp_path / "init" / "init.json",
                secret_id_file=tmp_path / "secrets" / "vault_secret_id",
                role_id="aggregator-gateway", regions=("eu", "us"))
    said: list[str] = []
    with server(bao, tmp_path, port):
        bootstrap(plan, said.append)
        bootstrap(plan, said.append)  # again: nothing to do, nothing breaks
        secret_id = plan.secret_id_file.read_text()
        for path in (plan.init_file, plan.secret_id_file):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        config = TransitConfig(url=plan.address, key_name="aggregator-eu", verify=ca,
                               approle_role_id="aggregator-gateway",
                               approle_secret_id=Secret(secret_id))
        provider = TransitProvider(config)
        try:
            provider.ensure_kek()
            made = provider.generate_data_key("dek_usr_eu_bootstrap")
        finally:
            provider.close()
    assert not any(secret_id in line for line in said)
    with server(bao, tmp_path, port):
        sealed = requests.get(f"{plan.address}/v1/sys/seal-status", verify=ca, timeout=5).json()
        assert sealed["sealed"] is True
        bootstrap(plan, said.append)
        provider = TransitProvider(config)
        try:
            assert provider.unwrap(made.wrapped) == made.plaintext
        finally:
            provider.close()
    assert said.count(f"{plan.address}: unsealed") == 2  # after init, after the restart


def test_bootstrap_names_the_address_when_the_server_is_unreachable(tmp_path: Path) -> None:
    plan = Plan(address="https://127.0.0.1:9", ca_cert=True, init_file=tmp_path / "i.json",
                secret_id_file=tmp_path / "s", role_id="r", regions=("eu",))
    with pytest.raises(BootstrapError, match=r"OpenBao at https://127\.0\.0\.1:9: could not "
                                             r"reach the server"):
        bootstrap(plan, lambda _: None)
    assert not os.path.exists(tmp_path / "i.json")
