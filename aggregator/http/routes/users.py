"""``/v1/users``: an application's end users, each pinned to a home region at creation."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from starlette.routing import BaseRoute

from aggregator import audit
from aggregator.http.problems import Conflict, FieldError, ValidationFailed
from aggregator.http.routes.connections import list_user_connections
from aggregator.http.routes.owned import owned_user
from aggregator.http.routing import ApiRoute, Call, Operation
from aggregator.http.views import ConnectionList, CreateUser, UserOut
from aggregator.users import create_user, find_user

USER_ID = {"id": "A user id (`usr_<region>_…`)."}


async def post_user(call: Call) -> UserOut:
    body = call.body_as(CreateUser)
    router = call.services.router
    if body.region not in router.regions:
        served = ", ".join(router.regions)
        raise ValidationFailed([FieldError(f"is not a region served here ({served})",
                                           pointer="#/region")])
    custody = call.services.custody[body.region]
    try:
        async with router.session(body.region) as session, session.begin():
            existing = await find_user(session, custody, call.caller, body.external_id)
            if existing is not None:
                raise Conflict(
                    "the application already has a user with this external_id here",
                    extra={"user_id": existing.id},
                )
            user = await create_user(session, custody, call.caller, body.external_id)
            await session.flush()
            await audit.record(
                session, actor=call.caller, action="user.created", target_id=user.id,
                request_id=call.request_id, client_ip=call.client_ip,
            )
    except IntegrityError:
        # A concurrent request created the same user between our lookup and insert.
        raise Conflict("the application already has a user with this external_id here") \
            from None
    return UserOut(user.id, body.external_id, user.home_region, user.created_at)


async def get_user(call: Call) -> UserOut:
    user_id, region = call.path_id("id", "usr")
    custody = call.services.custody[region]
    async with call.services.router.reader(region) as session:
        user = await owned_user(session, user_id, call.caller)
        key = await custody.data_keys.load(session, user.id)
        external_id = await custody.sealer.open_from(key, user, "external_id_sealed")
    return UserOut(user.id, external_id or "", user.home_region, user.created_at)


async def get_user_connections(call: Call) -> ConnectionList:
    user_id, region = call.path_id("id", "usr")
    return await list_user_connections(call, user_id, region)


def routes() -> list[BaseRoute]:
    return [
        ApiRoute("/v1/users", post_user, "POST", Operation(
            description=(
                "Registers one of the application's end users in a home region, fixed "
                "forever: every id of the user's data names that region, and the data "
                "never leaves it. `external_id` is the application's own id for the user; "
                "it is kept only as a keyed hash and sealed, and creating the same "
                "`external_id` again answers 409."
            ),
            summary="Create a user in a home region", body=CreateUser, response=UserOut,
            status=201, errors=(409,), tags=("users",),
        )),
        ApiRoute("/v1/users/{id}", get_user, "GET", Operation(
            description=(
                "The user's home region, creation time and the application's own "
                "`external_id` (sealed at rest, opened for this answer)."
            ),
            summary="Get a user", response=UserOut, tags=("users",), path_params=USER_ID,
        )),
        ApiRoute("/v1/users/{id}/connections", get_user_connections, "GET", Operation(
            description=(
                "Every connection of the user at any bank, oldest first, with its status "
                "(`active`, `reauth_required`, `revoked`, `error`), consent expiry and "
                "when the next sync is allowed."
            ),
            summary="List a user's bank connections", response=ConnectionList,
            tags=("connections",), path_params=USER_ID,
        )),
    ]
