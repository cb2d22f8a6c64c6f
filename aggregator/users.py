"""Creating and finding users: the home region is fixed here, once, in the id.

An application names its users by its own opaque id (often an email address), so that
id is stored as a keyed hash (to find the user again) and sealed under the user's own
data key (to show it back); erasure destroys the key and the hash alone reveals nothing.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from aggregator.custody import RegionCustody
from aggregator.ids import ApplicationId, new_id
from aggregator.models import User
from aggregator.store.residency import REGION_KEY


async def create_user(
    session: AsyncSession, custody: RegionCustody, application_id: ApplicationId,
    external_id: str,
) -> User:
    """Add a user of ``application_id`` homed in the session's region, with its data key.

    Raises ``IntegrityError`` at flush if the application already has this user: look
    it up with :func:`find_user` first when that is expected.
    """
    region = session.info[REGION_KEY]
    if region != custody.region:
        raise ValueError("the session and the custody belong to different regions")
    user = User(
        id=new_id("usr", region), home_region=region, application_id=application_id,
        external_id_digest=custody.hasher.external_user_id(application_id, external_id),
    )
    session.add(user)
    key = await custody.data_keys.create(session, user.id)
    await custody.sealer.seal_into(key, user, "external_id_sealed", external_id, session=session)
    return user


async def find_user(
    session: AsyncSession, custody: RegionCustody, application_id: ApplicationId,
    external_id: str,
) -> User | None:
    """The application's user with this external id in the session's region, if any."""
    digest = custody.hasher.external_user_id(application_id, external_id)
    return (await session.execute(
        select(User).where(
            User.application_id == application_id, User.external_id_digest == digest
        )
    )).scalar_one_or_none()
