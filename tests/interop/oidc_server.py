"""Start and stop panva's oidc-provider (``oidc_provider/server.mjs``) on loopback.

The server binds 127.0.0.1 on a port the kernel picks, prints one ready line with its issuer,
and exits when its stdin closes, so even a killed test run leaves no server behind.
``start_server`` waits for that line within ``START_TIMEOUT_S``; ``stop_server`` closes stdin,
then terminates, then kills, each step bounded by ``STOP_TIMEOUT_S``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

SERVER_DIR = Path(__file__).parent / "oidc_provider"
READY_MARKER = "OIDC-PROVIDER-READY "
NPM_CI_TIMEOUT_S = 300.0
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
POLL_INTERVAL_S = 0.05

# Never requested: drive_login stops at the redirect to it (a loopback URI, RFC 8252 §7.3).
REDIRECT_URI = "http://127.0.0.1:8976/oauth/callback"
SCOPE = "openid offline_access accounts"

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
AUTH_METHODS: tuple[AuthMethod, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
)


class NodeToolsMissing(RuntimeError):
    """``node`` or ``npm`` is not on PATH."""


class ServerStartError(RuntimeError):
    """``npm ci`` failed, or the server exited or stayed silent instead of becoming ready."""


@dataclass(frozen=True)
class RegisteredClient:
    """A client registered at server start, with what our side needs to authenticate as it.

    ``client_secret`` is set for the two ``client_secret_*`` methods; ``private_key`` (EC
    P-256, signing ES256) and ``key_id`` for ``private_key_jwt``. The server got the public
    half inline as a JWK, so it never fetches a ``jwks_uri``.
    """

    client_id: str
    auth_method: AuthMethod
    redirect_uri: str
    client_secret: str | None = field(default=None, repr=False)
    private_key: ec.EllipticCurvePrivateKey | None = field(default=None, repr=False)
    key_id: str | None = None
    #: RFC 9449 §5.2 client metadata: the server issues this client DPoP-bound tokens only.
    dpop_bound: bool = False

    def private_key_pem(self) -> bytes:
        """The signing key as unencrypted PKCS#8 PEM."""
        return self._key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def private_jwk(self) -> dict[str, str]:
        """The signing key as a private JWK (RFC 7517) carrying ``kid`` and ``alg``."""
        key = self._key()
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        return {**ec_public_jwk(key.public_key(), self.key_id or ""), "d": _b64url(scalar)}

    def metadata(self) -> dict[str, Any]:
        """The RFC 7591 client metadata handed to the server."""
        entry: dict[str, Any] = {
            "client_id": self.client_id,
            "token_endpoint_auth_method": self.auth_method,
            "redirect_uris": [self.redirect_uri],
        }
        if self.client_secret is not None:
            entry["client_secret"] = self.client_secret
        if self.private_key is not None:
            public = ec_public_jwk(self.private_key.public_key(), self.key_id or "")
            entry["jwks"] = {"keys": [public]}
            entry["token_endpoint_auth_signing_alg"] = "ES256"
        if self.dpop_bound:
            entry["dpop_bound_access_tokens"] = True
            entry["id_token_signed_response_alg"] = "ES256"  # FAPI 2.0 §5.4: no RS256
        return entry

    def _key(self) -> ec.EllipticCurvePrivateKey:
        if self.private_key is None:
            raise TypeError(f"{self.client_id} authenticates with a secret, not a key")
        return self.private_key


@dataclass(frozen=True)
class OidcProviderServer:
    """A running oidc-provider: its issuer and the clients it was started with."""

    issuer: str
    version: str
    require_par: bool
    clients: dict[AuthMethod, RegisteredClient]
    log_dir: Path
    process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    fapi2: bool = False

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def client(self, auth_method: AuthMethod) -> RegisteredClient:
        return self.clients[auth_method]


def ec_public_jwk(public_key: ec.EllipticCurvePublicKey, key_id: str) -> dict[str, str]:
    """RFC 7518 §6.2.1 public JWK of a P-256 key."""
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
        "kid": key_id,
        "alg": "ES256",
        "use": "sig",
    }


def make_clients() -> dict[AuthMethod, RegisteredClient]:
    """Fresh secrets and a fresh P-256 key for each server."""
    return {
        "client_secret_basic": RegisteredClient(
            client_id="basic-client",
            auth_method="client_secret_basic",
            redirect_uri=REDIRECT_URI,
            client_secret=f"basic-client-{os.urandom(16).hex()}",
        ),
        "client_secret_post": RegisteredClient(
            client_id="post-client",
            auth_method="client_secret_post",
            redirect_uri=REDIRECT_URI,
            client_secret=f"post-client-{os.urandom(16).hex()}",
        ),
        "private_key_jwt": RegisteredClient(
            client_id="jwt-client",
            auth_method="private_key_jwt",
            redirect_uri=REDIRECT_URI,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            key_id="jwt-client-key-1",
        ),
    }


def make_fapi2_clients() -> dict[AuthMethod, RegisteredClient]:
    """The FAPI 2.0 server's one client: private_key_jwt, DPoP-bound tokens."""
    return {
        "private_key_jwt": RegisteredClient(
            client_id="fapi2-client",
            auth_method="private_key_jwt",
            redirect_uri=REDIRECT_URI,
            private_key=ec.generate_private_key(ec.SECP256R1()),
            key_id="fapi2-client-key-1",
            dpop_bound=True,
        ),
    }


def find_node_tools() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise NodeToolsMissing(
            "interop tests need node and npm on PATH (Debian: apt-get install -y nodejs npm)"
        )
    return node, npm


def ensure_node_modules(npm: str) -> None:
    """Run ``npm ci`` once if the pinned packages are not installed yet (CI runs it too)."""
    if (SERVER_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        return
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=SERVER_DIR,
        capture_output=True,
        text=True,
        timeout=NPM_CI_TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        raise ServerStartError(f"npm ci failed in {SERVER_DIR}:\n{result.stdout}\n{result.stderr}")


def start_server(
    node: str, log_dir: Path, *, require_par: bool, fapi2: bool = False
) -> OidcProviderServer:
    """Start server.mjs with fresh clients; stdout and stderr go to files in ``log_dir``.

    ``fapi2`` starts the FAPI 2.0 configuration (PAR required, private_key_jwt, DPoP).
    """
    clients = make_fapi2_clients() if fapi2 else make_clients()
    env = {
        **os.environ,
        "OIDC_CLIENTS": json.dumps([client.metadata() for client in clients.values()]),
        "OIDC_PORT": "0",
        "OIDC_REQUIRE_PAR": "1" if require_par else "0",
        "OIDC_FAPI2": "1" if fapi2 else "0",
    }
    env.pop("DEBUG", None)  # oidc-provider traces through the `debug` package
    stdout_path, stderr_path = log_dir / "stdout.log", log_dir / "stderr.log"
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [node, "server.mjs"],
            cwd=SERVER_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        ready = _wait_ready(process, log_dir)
    except BaseException:
        stop_server(process)
        raise
    return OidcProviderServer(
        issuer=str(ready["issuer"]),
        version=str(ready["version"]),
        require_par=bool(ready["require_par"]),
        clients=clients,
        fapi2=bool(ready.get("fapi2")),
        log_dir=log_dir,
        process=process,
    )


def stop_server(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()  # server.mjs exits on end of stdin
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)


def _wait_ready(process: subprocess.Popen[bytes], log_dir: Path) -> dict[str, Any]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready = _read_ready_line(log_dir / "stdout.log")
        if ready is not None:
            issuer = str(ready["issuer"])
            if not issuer.startswith("http://127.0.0.1:"):
                raise ServerStartError(f"server is not on loopback: {issuer}")
            return ready
        if process.poll() is not None:
            raise ServerStartError(
                f"oidc-provider exited with {process.returncode}\n{_logs(log_dir)}"
            )
        time.sleep(POLL_INTERVAL_S)
    raise ServerStartError(f"oidc-provider not ready within {START_TIMEOUT_S} s\n{_logs(log_dir)}")


def _read_ready_line(stdout_path: Path) -> dict[str, Any] | None:
    for line in stdout_path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith(READY_MARKER):
            ready: dict[str, Any] = json.loads(line.removeprefix(READY_MARKER))
            return ready
    return None


def _logs(log_dir: Path) -> str:
    parts = []
    for name in ("stdout.log", "stderr.log"):
        text = (log_dir / name).read_text(encoding="utf-8", errors="replace")
        parts.append(f"--- {name} ---\n{text[-4000:]}")
    return "\n".join(parts)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
