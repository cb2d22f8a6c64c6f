"""docker-compose.yml is production-shaped (issue 17), checked without a Docker engine.

The Compose Specification's JSON schema (vendored by check-jsonschema) checks the shape;
these tests check what ``docker compose config`` would also refuse (references to
services, volumes and secrets that are not declared) and what the deployment promises:
no dev-mode OpenBao, one-shot set-up services, healthchecks on the gateway (``/readyz``)
and the worker (its metrics, bound where the check reaches them), restart policies,
secrets as files, ``public_url`` set, no sandbox bank in the production services, and a
multi-stage, non-root image built from a constraints file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
PRODUCTION = ("postgres-eu", "postgres-us", "vault", "migrate", "gateway", "worker")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = YAML(typ="safe").load(COMPOSE.read_text())
    return data


def test_the_file_validates_against_the_compose_specification() -> None:
    checker = Path(sys.executable).parent / "check-jsonschema"
    done = subprocess.run([str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_reference_is_declared() -> None:
    spec = compose()
    services, volumes, secrets = spec["services"], spec["volumes"], spec["secrets"]
    for name, service in services.items():
        for needed in service.get("depends_on", {}):
            assert needed in services, (name, needed)
        for secret in service.get("secrets", []):
            assert secret in secrets, (name, secret)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in volumes, (name, source)
            elif source.startswith("./deploy"):
                assert (ROOT / source).exists(), (name, source)
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.split(":", 1)[1] in services, name
    for secret in secrets.values():
        assert secret["file"].startswith("./secrets/")


def test_the_production_services_are_production_shaped() -> None:
    spec = compose()
    services = spec["services"]
    vault = services["vault"]
    assert "-dev" not in " ".join(vault["command"])
    assert any(v.endswith(":/openbao/data") for v in vault["volumes"])
    assert services["vault-init"]["restart"] == "no"
    assert services["migrate"]["command"] == ["aggregator", "migrate"]
    for name in ("gateway", "worker"):
        assert services[name]["depends_on"]["migrate"] == {
            "condition": "service_completed_successfully"}
    for name in PRODUCTION:
        assert services[name]["restart"] in ("unless-stopped", "always", "on-failure"), name
        assert "healthcheck" in services[name] or name == "migrate", name
        assert "profiles" not in services[name], name
    gateway, worker = services["gateway"], services["worker"]
    assert "/readyz" in " ".join(gateway["healthcheck"]["test"])
    assert "9100/metrics" in " ".join(worker["healthcheck"]["test"])
    metrics_host = worker["command"][worker["command"].index("--metrics-host") + 1]
    assert metrics_host == "0.0.0.0"  # noqa: S104 - inside its container, for Prometheus
    env = gateway["environment"]
    assert env["AGGREGATOR_PUBLIC_URL"].startswith("${AGGREGATOR_PUBLIC_URL:?")
    # Secrets are files, never values in the Compose file.
    assert not [k for k, v in env.items() if re.search(r"(PASSWORD|TOKEN|SECRET)$", k) and v]
    assert all(not str(v).startswith("postgresql+psycopg://") for v in env.values())
    # No production service offers the sandbox banks.
    for name in PRODUCTION:
        text = repr(services[name])
        assert "AGGREGATOR_BANKS_SANDBOX" not in text, name
        assert "sandbox-bank" not in text, name
    assert services["sandbox"]["profiles"] == ["sandbox"]


def test_the_image_is_multi_stage_non_root_and_pinned() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert len(re.findall(r"^FROM ", dockerfile, re.M)) >= 2
    assert re.search(r"^USER aggregator$", dockerfile, re.M)
    assert "--constraint constraints.txt" in dockerfile
    assert "pip install -e" not in dockerfile
    pins = [line for line in (ROOT / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[^\s]+", p) for p in pins), pins
    pinned = {p.split("==")[0].lower().replace("_", "-") for p in pins}
    for dependency in ("sqlalchemy", "httpx", "hvac", "cryptography", "uvicorn"):
        assert dependency in pinned, dependency
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert ignored[ignored.index("*") if "*" in ignored else 0] == "*"  # deny by default
    assert not any(line.lstrip("!").startswith((".venv", ".git", "var", "secrets"))
                   for line in ignored if line.startswith("!"))
