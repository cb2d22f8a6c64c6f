"""Resealing a user's values under a new data key, after :meth:`DataKeys.rotate`.

A data key seals at most ``seal_limit`` values (random 96-bit nonces, NIST SP 800-38D
§8.3); :class:`vault.SealLimitReached` then asks for the user's key to be rotated:
``aggregator keys rotate-user USER_ID``. Rotation gives the user a new key at once (new
values are sealed under it) and keeps the old one, wrapped, in the user's ``data_keys``
row; :func:`reseal_user` then walks every sealed column of every row of the user, in
batches each committed on its own, opens what the old key sealed and seals it again
under the new one. It is resumable: a value already under the new key is skipped, so an
interrupted run is simply run again. When nothing is left under the old key, the row
forgets it.

Erasure during a reseal destroys both keys at once (the one row holds them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Mapper

from aggregator.custody import RegionCustody
from aggregator.idempotency import user_place
from aggregator.ids import UserId
from aggregator.models import Base, IdempotencyRecord, User, sealed_columns
from aggregator.models.base import table_of
from aggregator.sealing import Field, field_of
from aggregator.store import RegionRouter
from vault import data_key_id

BATCH = 200


@dataclass
class ResealProgress:
    """What one run did: values resealed, and whether the old key is gone."""

    resealed: int = 0
    finished: bool = False


def _place(row: Any, column: str) -> Field:
    if isinstance(row, IdempotencyRecord):  # its place names the request, not just the row
        assert row.user_id is not None
        return user_place(row.application_id, row.key_digest, row.fingerprint, row.user_id)
    return field_of(row, column)


def _models() -> list[tuple[type[Base], list[str]]]:
    out = []
    for mapper in Base.registry.mappers:
        model = mapper.class_
        columns = [c.name for c in sealed_columns(table_of(model))]
        if columns:
            out.append((model, columns))
    return sorted(out, key=lambda item: item[0].__tablename__)


def _subject(model: type[Base]) -> Any:
    return model.id if model is User else model.user_id  # type: ignore[attr-defined]


async def reseal_user(
    router: RegionRouter, custody: RegionCustody, user_id: UserId, *,
    batch: int = BATCH, max_batches: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ResealProgress:
    """Reseal what the user's previous data key sealed (see the module docstring)."""
    region = custody.region
    out = ResealProgress()
    async with router.reader(region) as session:
        key = await custody.data_keys.load(session, user_id)
    old = custody.data_keys.retired.get(key.dek_id)
    if old is None:
        out.finished = True
        return out
    batches = 0
    for model, columns in _models():
        mapper: Mapper[Any] = model.__mapper__
        order = list(mapper.primary_key)
        offset = 0
        while True:
            if max_batches is not None and batches >= max_batches:
                return out
            async with router.session(region) as session, session.begin():
                key = await custody.data_keys.load(session, user_id)
                rows = (await session.execute(
                    select(model).where(_subject(model) == user_id)
                    .order_by(*order).offset(offset).limit(batch)
                )).scalars().all()
                for row in rows:
                    for column in columns:
                        blob = getattr(row, column)
                        if blob is None or data_key_id(bytes(blob)) != old.dek_id:
                            continue
                        place = _place(row, column)
                        plain = await custody.sealer.open(key, place, bytes(blob))
                        setattr(row, column, await custody.sealer.seal(key, place, plain,
                                                                       session=session))
                        out.resealed += 1
            batches += 1
            if progress is not None:
                progress(out.resealed)
            if len(rows) < batch:
                break
            offset += batch
    async with router.session(region) as session, session.begin():
        out.finished = await custody.data_keys.finish_rotation(session, user_id, old.dek_id)
    return out
