"""The declarative base, stable constraint names, and the columns that carry a region.

Every column whose value names a region is flagged in ``Column.info["region"]``; the
residency guard (:mod:`aggregator.store.residency`) and the tests read the flags from the
metadata, so a table added later is covered without touching either:

- ``"id"``: a regional id (``usr_eu_…``) that must name the session's region;
- ``"any"``: a global id, a regional id of the session's region, or a non-id code such
  as ``worker`` (audit actors and targets);
- ``"name"``: a bare region name (``eu``) that must equal the session's region.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import Column, ForeignKey, LargeBinary, MetaData, String, Table
from sqlalchemy.orm import DeclarativeBase, MappedColumn, mapped_column

from aggregator.models.types import UTCDateTime

#: Alembic diffs and migrations refer to constraints by name; these names never depend
#: on the order a dialect happens to create things in.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

ID_LENGTH = 40  # "txn_" + region (≤ 8) + "_" + 26 characters, with room to spare
RegionFlag = Literal["id", "any", "name"]


class Base(DeclarativeBase):
    """Declarative base of every table the gateway stores in a region's database."""

    metadata = metadata


def utcnow() -> datetime:
    return datetime.now(UTC)


def id_column(*, primary_key: bool = False, **kw: Any) -> MappedColumn[Any]:
    """A regional id column: the row's own id, or its owner's."""
    return mapped_column(
        String(ID_LENGTH), primary_key=primary_key, info={"region": "id"}, **kw
    )


def ref_column(target: str, *, ondelete: str = "CASCADE", **kw: Any) -> MappedColumn[Any]:
    """A foreign key to another regional row (``"users.id"``), indexed for joins."""
    kw.setdefault("index", True)
    return mapped_column(
        String(ID_LENGTH), ForeignKey(target, ondelete=ondelete), info={"region": "id"}, **kw
    )


def app_column(**kw: Any) -> MappedColumn[Any]:
    """A reference to an application: global, so it carries no region flag."""
    kw.setdefault("index", True)
    return mapped_column(
        String(ID_LENGTH), ForeignKey("applications.id", ondelete="RESTRICT"), **kw
    )


def created_column() -> MappedColumn[Any]:
    return mapped_column(UTCDateTime, default=utcnow)


def updated_column() -> MappedColumn[Any]:
    return mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


def region_columns(table: Table) -> list[tuple[Column[Any], RegionFlag]]:
    """The columns of ``table`` that name a region, with how they name it."""
    return [(c, c.info["region"]) for c in table.columns if "region" in c.info]


def sealed_columns(table: Table) -> list[Column[Any]]:
    """The columns of ``table`` that hold envelope-sealed values (never clear text)."""
    return [c for c in table.columns if c.info.get("sealed")]


def sealed_column(*, nullable: bool = True) -> MappedColumn[Any]:
    """An envelope-sealed value (:mod:`aggregator.sealing`); its AAD names this column."""
    return mapped_column(LargeBinary, nullable=nullable, info={"sealed": True})


def digest_column(**kw: Any) -> MappedColumn[Any]:
    """A SHA-256 or HMAC-SHA256 digest, for lookups that must not see the plaintext."""
    return mapped_column(LargeBinary(32), **kw)


def table_of(model: type[Base]) -> Table:
    """A model's table, typed as a ``Table`` for Core statements."""
    table = model.__table__
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not mapped to a single table")
    return table
