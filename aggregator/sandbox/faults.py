"""Fault injection for the token endpoint and the account API, as pure-ASGI middleware.

The 5xx draw comes from an RNG seeded by :attr:`Faults.seed` and reset whenever the
switches change, so a benchmark that sets ``error_rate=0.2, seed=7`` sees the same
sequence of failures on every run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import threading
from typing import Literal

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from aggregator.sandbox.aisp import obie_error
from aggregator.sandbox.config import Faults

Flavour = Literal["token", "obie"]


class FaultInjector:
    """Holds the current switches; swapping them is atomic and thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        self._rng = random.Random(0)  # noqa: S311 - reproducible fault draws, not security

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        with self._lock:
            self._faults = faults
            self._rng = random.Random(faults.seed)  # noqa: S311 - as above

    def draw_server_error(self, faults: Faults) -> bool:
        if faults.fail_next > 0 and self._take_failure(faults):
            return True
        if faults.error_rate <= 0.0:
            return False
        with self._lock:
            return self._rng.random() < faults.error_rate

    def _take_failure(self, faults: Faults) -> bool:
        """Consume one of ``fail_next`` (the switches are replaced, counted down)."""
        with self._lock:
            if self._faults is not faults or faults.fail_next <= 0:
                return False
            self._faults = dataclasses.replace(faults, fail_next=faults.fail_next - 1)
            return True


class FaultGate:
    """Delays, throttles or fails requests before they reach the wrapped endpoint."""

    def __init__(self, app: ASGIApp, injector: FaultInjector, flavour: Flavour) -> None:
        self.app = app
        self.injector = injector
        self.flavour = flavour

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        faults = self.injector.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        response = self._fault(faults) or self._resource_fault(faults, scope["path"])
        if response is None:
            await self.app(scope, receive, send)
        else:
            await response(scope, receive, send)

    def _fault(self, faults: Faults) -> JSONResponse | None:
        if faults.rate_limit_retry_after is not None:
            retry = {"Retry-After": str(faults.rate_limit_retry_after)}
            return self._error(429, "Too many requests (sandbox fault switch).", retry)
        if self.injector.draw_server_error(faults):
            return self._error(503, "Service unavailable (sandbox fault switch).", {})
        if self.flavour == "token" and faults.force_invalid_grant:
            body = {
                "error": "invalid_grant",
                "error_description": "Forced by sandbox fault switch.",
            }
            return JSONResponse(body, status_code=400, headers={"Cache-Control": "no-store"})
        return None

    def _resource_fault(self, faults: Faults, path: str) -> JSONResponse | None:
        if self.flavour != "obie":
            return None
        resource = path.rstrip("/").rsplit("/", 1)[-1]
        if resource in faults.missing_resources:
            return obie_error(404, "UK.OBIE.Resource.NotFound",
                              "Not offered (sandbox fault switch).", {})
        if resource in faults.forbidden_resources:
            return obie_error(403, "UK.OBIE.Resource.ConsentMismatch",
                              "Not permitted by the consent (sandbox fault switch).", {})
        return None

    def _error(self, status: int, message: str, headers: dict[str, str]) -> JSONResponse:
        if self.flavour == "obie":
            return obie_error(status, "UK.OBIE.UnexpectedError", message, headers)
        body = {"error": "temporarily_unavailable", "error_description": message}
        return JSONResponse(
            body, status_code=status, headers={**headers, "Cache-Control": "no-store"}
        )
