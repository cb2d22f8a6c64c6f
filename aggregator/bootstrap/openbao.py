"""``python -m aggregator.bootstrap.openbao``: initialise, unseal and configure OpenBao.

For the Compose deployment (docs/operations.md, "Deploying with Compose"); safe to run
again at any time, and after every OpenBao restart (a restarted server is sealed):

1. not initialised: ``sys/init`` with one key share; the unseal key and root token are
   written to ``$BAO_INIT_FILE`` (0600). Move them off the host for production, or use
   auto-unseal; whoever reads that file owns every key;
2. sealed: unseal with the key from that file;
3. Transit mounted, one non-exportable AES-256-GCM key per region (``aggregator-<region>``);
4. a policy reaching only those keys' endpoints (no export, no delete), an AppRole
   ``aggregator`` with the fixed role id ``$BAO_ROLE_ID`` bound to it, and a secret id
   written to ``$BAO_SECRET_ID_FILE`` (0600) when that file does not exist yet.

Settings: ``BAO_ADDR``, ``BAO_CACERT``, ``BAO_INIT_FILE``, ``BAO_SECRET_ID_FILE``,
``BAO_ROLE_ID`` (default ``aggregator-gateway``), ``BAO_SECRET_ID_OWNER`` (``uid:gid``),
``AGGREGATOR_REGIONS`` (default ``eu,us``).
Errors name the address and the step; no key or token is printed.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hvac
import requests

POLICY_NAME = ROLE_NAME = "aggregator"
DEFAULT_ROLE_ID = "aggregator-gateway"


class BootstrapError(Exception):
    """A step failed; the message names the server address and the step."""


@dataclass(frozen=True)
class Plan:
    address: str
    ca_cert: str | bool
    init_file: Path
    secret_id_file: Path
    role_id: str
    regions: tuple[str, ...]
    #: ``uid:gid`` to own the secret id file: the gateway's user reads Compose secrets
    #: with the host file's owner and mode.
    secret_id_owner: tuple[int, int] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Plan:
        return cls(
            address=env.get("BAO_ADDR", "https://vault:8200"),
            ca_cert=env.get("BAO_CACERT") or True,
            init_file=Path(env.get("BAO_INIT_FILE", "/vault-init/init.json")),
            secret_id_file=Path(env.get("BAO_SECRET_ID_FILE", "/secrets/vault_secret_id")),
            role_id=env.get("BAO_ROLE_ID", DEFAULT_ROLE_ID),
            regions=tuple(r.strip() for r in env.get("AGGREGATOR_REGIONS", "eu,us").split(",")
                          if r.strip()),
            secret_id_owner=_owner(env.get("BAO_SECRET_ID_OWNER", "")),
        )


def _owner(text: str) -> tuple[int, int] | None:
    if not text:
        return None
    uid, _, gid = text.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise BootstrapError(f"BAO_SECRET_ID_OWNER {text!r} is not UID:GID") from None


def policy(regions: Sequence[str]) -> str:
    """HCL granting the gateway exactly what the Transit provider calls, per region key."""
    rules = []
    for region in regions:
        key = f"aggregator-{region}"
        for path, caps in ((f"keys/{key}", '["create", "read", "update"]'),
                           (f"keys/{key}/config", '["update"]'),
                           (f"keys/{key}/rotate", '["update"]'),
                           (f"datakey/wrapped/{key}", '["update"]'),
                           (f"decrypt/{key}", '["update"]'),
                           (f"rewrap/{key}", '["update"]')):
            rules.append(f'path "transit/{path}" {{ capabilities = {caps} }}')
    return "\n".join(rules) + "\n"


def bootstrap(plan: Plan, say: Any = print) -> None:
    """Run every step; each is skipped when already done."""
    session = requests.Session()
    session.trust_env = False  # no proxy or CA bundle from the environment: BAO_CACERT only
    session.verify = plan.ca_cert  # hvac applies `verify` only to sessions it makes itself
    client = hvac.Client(url=plan.address, verify=plan.ca_cert, timeout=10, session=session)
    step = "reach the server"
    try:
        if not client.sys.is_initialized():
            step = "initialise"
            answer = client.sys.initialize(secret_shares=1, secret_threshold=1)
            _private_write(plan.init_file, json.dumps({
                "unseal_keys_b64": answer["keys_base64"], "root_token": answer["root_token"],
            }).encode())
            say(f"{plan.address}: initialised; unseal key and root token in {plan.init_file}")
        init = _read_init(plan.init_file)
        step = "unseal"
        if client.sys.is_sealed():
            client.sys.submit_unseal_key(key=init["unseal_keys_b64"][0])
            if client.sys.is_sealed():
                raise BootstrapError(f"{plan.address}: still sealed after the unseal key "
                                     f"from {plan.init_file}")
            say(f"{plan.address}: unsealed")
        client.token = init["root_token"]
        step = "wait for the server to become active"
        _wait_active(client, plan.address)
        step = "enable Transit"
        if "transit/" not in client.sys.list_mounted_secrets_engines()["data"]:
            client.sys.enable_secrets_engine("transit", path="transit")
        for region in plan.regions:
            step = f"create the Transit key aggregator-{region}"
            name = f"aggregator-{region}"
            try:
                client.secrets.transit.read_key(name=name)
            except hvac.exceptions.InvalidPath:
                client.secrets.transit.create_key(name=name, key_type="aes256-gcm96",
                                                  exportable=False)
                say(f"{plan.address}: Transit key {name} created")
        step = "write the gateway's policy"
        client.sys.create_or_update_policy(name=POLICY_NAME, policy=policy(plan.regions))
        step = "configure AppRole"
        if "approle/" not in client.sys.list_auth_methods()["data"]:
            client.sys.enable_auth_method("approle", path="approle")
        client.auth.approle.create_or_update_approle(  # durations, not secrets:
            role_name=ROLE_NAME, token_policies=[POLICY_NAME], token_ttl="1h",  # noqa: S106
            token_max_ttl="24h", secret_id_ttl="0",  # noqa: S106
        )
        client.auth.approle.update_role_id(role_name=ROLE_NAME, role_id=plan.role_id)
        if not plan.secret_id_file.exists():
            step = "issue the gateway's secret id"
            secret_id = client.auth.approle.generate_secret_id(role_name=ROLE_NAME)
            _private_write(plan.secret_id_file, secret_id["data"]["secret_id"].encode())
            if plan.secret_id_owner is not None:
                os.chown(plan.secret_id_file, *plan.secret_id_owner)
            say(f"{plan.address}: AppRole secret id written to {plan.secret_id_file}")
    except BootstrapError:
        raise
    except (hvac.exceptions.VaultError, requests.RequestException, OSError, KeyError) as exc:
        kind = type(exc).__name__
        raise BootstrapError(f"OpenBao at {plan.address}: could not {step} ({kind})") from None
    say(f"{plan.address}: ready (regions {', '.join(plan.regions)}, role id {plan.role_id})")


def _wait_active(client: Any, address: str, timeout: float = 30.0) -> None:
    """After unsealing, integrated storage elects a leader before it serves writes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.sys.read_health_status(method="GET")
        # hvac answers a 200 with its JSON, any other status with the response object.
        if isinstance(status, dict) and not status.get("sealed") and not status.get("standby"):
            return
        time.sleep(0.2)
    raise BootstrapError(f"{address}: unsealed but not active after {timeout:.0f} s")


def _read_init(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        raise BootstrapError(
            f"{path}: cannot read the unseal key and root token written at initialisation; "
            "restore that file (it is the only copy)") from None
    return data


def _private_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as stream:
        stream.write(data)


def main() -> int:
    try:
        bootstrap(Plan.from_env(os.environ))
    except BootstrapError as exc:
        print(f"bootstrap: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
