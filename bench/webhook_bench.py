"""Plaid webhooks verified and stored per second, against a trivial endpoint, and p99.

Our path: ``POST /webhooks/plaid/us`` on the full gateway app (middleware, ES256
verification with a cached key, body SHA-256, insert-or-ignore into the region's
SQLite store with its job) served by uvicorn on loopback. The limit: a bare Starlette
endpoint that reads the same body and answers 200, served the same way, measured in the
same run, rounds interleaved. Servers run in child processes so the load generator does
not share their interpreter.

Max rate: ``--requests`` unique, pre-signed webhooks at ``--concurrency`` in flight.
Latency: an open-loop schedule at half the measured maximum webhook rate for
``--seconds``; p99 of the response times.

Prints ``RESULT webhook_vs_trivial=… webhook_p99_ms=…``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import logging
import multiprocessing as mp
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _Key:
    """A Plaid-style ES256 signing key and its public JWK."""

    def __init__(self) -> None:
        self.kid = "bench-kid"
        self.private = ec.generate_private_key(ec.SECP256R1())

    def jwk(self) -> dict[str, Any]:
        numbers = self.private.public_key().public_numbers()
        return {"alg": "ES256", "crv": "P-256", "kid": self.kid, "kty": "EC", "use": "sig",
                "x": _b64url(numbers.x.to_bytes(32, "big")),
                "y": _b64url(numbers.y.to_bytes(32, "big")),
                "created_at": int(time.time()), "expired_at": None}

    def sign(self, body: bytes) -> str:
        header = _b64url(json.dumps({"alg": "ES256", "kid": self.kid, "typ": "JWT"}).encode())
        claims = _b64url(json.dumps({"iat": int(time.time()), "request_body_sha256":
                                     hashlib.sha256(body).hexdigest()}).encode())
        der = self.private.sign(f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{header}.{claims}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def _trivial_app() -> Starlette:
    async def endpoint(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"status": "stored"})
    return Starlette(routes=[Route("/webhooks/plaid/us", endpoint, methods=["POST"])])


def _gateway_app(directory: Path, jwk: Mapping[str, Any]) -> Any:
    from aggregator.http import Services, create_app
    from aggregator.http.routes.plaid_webhooks import SERVICE_KEY
    from aggregator.plaid import PlaidWebhooks
    from aggregator.settings import RegionSettings, Settings
    from aggregator.store import RegionRouter, upgrade
    from aggregator.store.engines import create_region_engine
    from connectors import WebhookKeys, WebhookVerifier
    from vault import LocalKeyringConfig

    url = f"sqlite+aiosqlite:///{directory / 'us.sqlite3'}"

    async def migrate() -> None:
        engine = create_region_engine("us", url)
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(migrate())
    settings = Settings(data_dir=directory, regions={
        "us": RegionSettings("us", url, LocalKeyringConfig(directory / "keys", "us"))})
    router = RegionRouter(settings)

    async def fetch(kid: str) -> Mapping[str, Any] | None:
        return jwk if kid == jwk["kid"] else None

    services = Services(settings, router, {}, cast(Any, None))  # no bank is called
    services.extra[SERVICE_KEY] = PlaidWebhooks(
        router, {"us": WebhookVerifier(WebhookKeys(fetch))})
    return create_app(settings, services=services)


def _serve(kind: str, directory: str, jwk: dict[str, Any], ports: Any) -> None:
    import uvicorn

    from aggregator.http.serving import bind, server_config

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    app = _trivial_app() if kind == "trivial" else _gateway_app(Path(directory), jwk)
    sock = bind("127.0.0.1", 0)
    ports.put(sock.getsockname()[1])
    asyncio.run(uvicorn.Server(server_config(app)).serve(sockets=[sock]))


def _signed(key: _Key, n: int, tag: str) -> list[tuple[bytes, str]]:
    out = []
    for i in range(n):
        body = json.dumps({"webhook_type": "TRANSACTIONS", "webhook_code": "SYNC_UPDATES_AVAILABLE",
                           "item_id": f"item-{tag}-{i}", "initial_update_complete": True,
                           "historical_update_complete": True, "environment": "sandbox"}).encode()
        out.append((body, key.sign(body)))
    return out


async def _send(client: httpx.AsyncClient, url: str, body: bytes, header: str) -> float:
    start = time.perf_counter()
    response = await client.post(url, content=body, headers={
        "Content-Type": "application/json", "Plaid-Verification": header})
    if response.status_code != 200:
        raise SystemExit(f"unexpected {response.status_code}: {response.text[:200]}")
    return time.perf_counter() - start


async def _max_rate(url: str, load: list[tuple[bytes, str]], concurrency: int) -> float:
    queue = iter(load)
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        async def worker() -> None:
            for body, header in queue:
                await _send(client, url, body, header)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(load) / (time.perf_counter() - start)


async def _latencies(url: str, load: list[tuple[bytes, str]], rate: float) -> list[float]:
    # Few keep-alive connections: httpx scans its whole pool per request
    # (docs/architecture.md, "Performance notes"), so a large pool would make the load
    # generator, not the gateway, the queue measured.
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=32), timeout=60) as client:
        start = time.perf_counter()
        tasks = []
        for i, (body, header) in enumerate(load):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_send(client, url, body, header)))
        return list(await asyncio.gather(*tasks))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0, help="latency phase length")
    args = parser.parse_args()

    key = _Key()
    ctx = mp.get_context("spawn")
    ports: Any = ctx.Queue()
    with tempfile.TemporaryDirectory() as directory:
        procs = {kind: ctx.Process(target=_serve, args=(kind, directory, key.jwk(), ports),
                                   daemon=True) for kind in ("trivial", "gateway")}
        urls = {}
        for kind, proc in procs.items():
            proc.start()
            urls[kind] = f"http://127.0.0.1:{ports.get(timeout=60)}/webhooks/plaid/us"
        try:
            rates: dict[str, list[float]] = {"trivial": [], "gateway": []}
            for r in range(args.rounds):
                for kind in ("trivial", "gateway"):
                    load = _signed(key, args.requests, f"{kind}{r}")
                    rates[kind].append(asyncio.run(
                        _max_rate(urls[kind], load, args.concurrency)))
                    print(f"round {r} {kind}: {rates[kind][-1]:,.0f}/s", flush=True)
            trivial = statistics.median(rates["trivial"])
            gateway = statistics.median(rates["gateway"])
            half = gateway / 2
            load = _signed(key, max(1, int(half * args.seconds)), "latency")
            latencies = sorted(asyncio.run(_latencies(urls["gateway"], load, half)))
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))] * 1000
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.join(10)
    print(f"trivial {trivial:,.0f}/s  gateway {gateway:,.0f}/s  (medians of {args.rounds})")
    print(f"latency at {half:,.0f}/s for {args.seconds:.0f} s: "
          f"p50 {statistics.median(latencies) * 1000:.1f} ms  p99 {p99:.1f} ms")
    print(f"RESULT webhook_vs_trivial={gateway / trivial:.2f} webhook_p99_ms={p99:.1f}")


if __name__ == "__main__":
    main()
