"""``DELETE /v1/users/{id}`` and ``/v1/erasure-requests``: data-subject erasure.

Deleting a user answers 202 with an erasure request at once; the job runs right after
the response, in this process (a background task), and any process can resume it
(:func:`aggregator.erasure.resume_pending`). Deleting again returns the same request,
also once the user is gone. A user id of another application, or of a region this
deployment does not serve, is a 404: the request never reaches another region's store.
"""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from aggregator.erasure import (
    ErasureConfig,
    ErasureJob,
    ErasureMetrics,
    ErasureRequestOut,
    request_erasure,
    request_view,
)
from aggregator.http.problems import NotFound
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.schema import encode
from aggregator.http.services import Services
from aggregator.models import ErasureRequest

#: ``Services.extra`` keys: an :class:`ErasureConfig`, and False to skip the in-process
#: run (a deployment that leaves every request to the workers).
CONFIG_KEY = "erasure_config"
INLINE_KEY = "erasure_inline"


def erasure_config(services: Services) -> ErasureConfig:
    found = services.extra.get(CONFIG_KEY)
    return found if isinstance(found, ErasureConfig) else ErasureConfig.from_settings(
        services.settings)


async def delete_user(call: Call) -> JSONResponse:
    """Start erasing the user (revoke at banks, delete, crypto-shred, receipt); 202."""
    user_id, region = call.path_id("id", "usr")
    services = call.services
    config = erasure_config(services)
    request = await request_erasure(
        services.router, services.custody[region], user_id, call.caller, config=config,
        actor=call.caller, request_id=call.request_id, client_ip=call.client_ip,
    )
    if request is None:
        raise NotFound("no user with this id")
    async with services.router.reader(region) as session:
        view = await request_view(session, region, request)
    await _metrics(call.request).refresh(services.router)
    task = None
    if not view.state.done and services.extra.get(INLINE_KEY, True):
        job = ErasureJob(services.router, services.custody, services.banks, config)
        task = BackgroundTask(job.run_logged, request.id)
    return JSONResponse(encode(view), status_code=202, background=task)


async def get_erasure_request(call: Call) -> ErasureRequestOut:
    request_id, region = call.path_id("id", "era")
    async with call.services.router.reader(region) as session:
        found = await session.get(ErasureRequest, request_id)
        if found is None or found.application_id != call.caller:
            raise NotFound("no erasure request with this id")
        return await request_view(session, region, found)


def _metrics(request: Request) -> ErasureMetrics:
    state = request.app.state
    found = getattr(state, "erasure_metrics", None)
    if not isinstance(found, ErasureMetrics):
        found = state.erasure_metrics = ErasureMetrics(state.metrics.registry)
    return found


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/v1/users/{id}", delete_user, "DELETE", Operation(
            summary="Erase a user: revoke at banks, delete, crypto-shred, receipt",
            description=delete_user.__doc__, response=ErasureRequestOut, status=202,
            tags=("erasure",), path_params={"id": "A user id (`usr_<region>_…`)."},
        )),
        ApiRoute("/v1/erasure-requests/{id}", get_erasure_request, "GET", Operation(
            description=(
                "Where an erasure stands (the last step it completed, up to `completed`), "
                "its statutory deadline, and once completed the receipt: rows deleted per "
                "table and each grant's revocation outcome at its bank. The receipt names "
                "no user."
            ),
            summary="Get an erasure request and, when done, its receipt",
            response=ErasureRequestOut, tags=("erasure",),
            path_params={"id": "An erasure request id (`era_<region>_…`)."},
        )),
    ]
