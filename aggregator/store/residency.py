"""The residency guard: no write through a region's session names another region.

Two hooks enforce it, so no code path relies on convention:

- a ``before_flush`` listener on every :class:`RegionSession` checks each new and
  changed ORM object before any SQL is emitted, and names the object at fault;
- a ``before_cursor_execute`` listener on each region's engine checks every ``INSERT``
  and ``UPDATE`` (the Core and bulk paths, which never flush) against the engine's
  region, before the statement reaches the database.

Which columns to check comes from the metadata (``Column.info["region"]``, see
:mod:`aggregator.models.base`), so a table added later is guarded without code here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Column, Table, event
from sqlalchemy.engine import Connection, Engine, ExecutionContext
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Session, UOWTransaction, object_mapper
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.sql.dml import Insert, Update

from aggregator.errors import MalformedId, ResidencyViolation
from aggregator.ids import parse_id
from aggregator.models.base import RegionFlag, region_columns

REGION_KEY = "region"
#: ``session.info`` flag of sessions from :meth:`RegionRouter.session` (they may write).
WRITES_KEY = "writes"

# Keyed by name: ORM statements hand over annotated copies of the same table.
_by_table: dict[str, list[tuple[Column[Any], RegionFlag]]] = {}


def check_value(table: str, column: str, flag: RegionFlag, value: object, region: str) -> None:
    """Raise :class:`ResidencyViolation` unless ``value`` may be stored in ``region``."""
    if value is None or not isinstance(value, str):
        return  # NULL, or a SQL expression evaluated inside this same database
    if flag == "name":
        if value != region:
            raise ResidencyViolation(
                f"{table}.{column} names region {value!r}; this session writes {region!r}"
            )
        return
    try:
        found = parse_id(value).region
    except MalformedId:
        if flag == "any":
            return  # audit actors such as "worker" are codes, not ids
        raise ResidencyViolation(
            f"{table}.{column} must hold a regional id, not {value[:8]!r}…"
        ) from None
    if found is None and flag == "any":
        return
    if found != region:
        raise ResidencyViolation(
            f"{table}.{column} holds an id of region {found!r}; this session writes {region!r}"
        )


def _columns(table: Table) -> list[tuple[Column[Any], RegionFlag]]:
    cols = _by_table.get(table.fullname)
    if cols is None:
        cols = _by_table[table.fullname] = region_columns(table)
    return cols


class RegionSession(Session):
    """A session bound to one region (``session.info["region"]``); see the module doc."""


@event.listens_for(RegionSession, "before_flush")
def _before_flush(session: Session, _flush: UOWTransaction, _instances: object) -> None:
    region = session.info.get(REGION_KEY)
    if not isinstance(region, str):
        raise ResidencyViolation("this session is not bound to a region; use RegionRouter")
    for obj in (*session.new, *session.dirty):
        mapper = object_mapper(obj)
        table = mapper.local_table
        if not isinstance(table, Table):
            continue
        loaded = instance_state(obj).dict
        for column, flag in _columns(table):
            key = mapper.get_property_by_column(column).key
            if key in loaded:
                check_value(table.name, column.name, flag, loaded[key], region)


def install_engine_guard(engine: Engine, region: str) -> None:
    """Check Core INSERT/UPDATE parameters on ``engine`` against ``region``.

    The check reads the parameters SQLAlchemy has already compiled for the statement
    (``context.compiled_parameters``, every row of an executemany included) just before
    the cursor runs it. Compiling each statement a second time to find its embedded
    values took about a tenth of a refresh worker's CPU (bench/refresh_bench.py).
    """

    @event.listens_for(engine, "before_cursor_execute")
    def _before_cursor_execute(
        conn: Connection, _cursor: Any, _statement: str, _parameters: Any,
        context: ExecutionContext | None, _executemany: bool,
    ) -> None:
        if not isinstance(context, DefaultExecutionContext) or context.compiled is None:
            return  # a textual statement: never a write of ours (migrations, SET, …)
        compiled = context.compiled
        statement = compiled.statement
        if not isinstance(statement, Insert | Update) or not isinstance(statement.table, Table):
            return
        if getattr(context, _CHECKED, False):
            return  # one batch of an "insertmanyvalues" INSERT already checked them all
        table = statement.table
        if _flags(table):
            for row in context.compiled_parameters:
                _check_row(table, row, region)
        setattr(context, _CHECKED, True)


_CHECKED = "_aggregator_residency_checked"


_MULTI_VALUES = re.compile(r"^(.*)_m\d+$")


def _flags(table: Table) -> dict[str, tuple[str, RegionFlag]]:
    """Bind-parameter key → (column name, flag) of ``table``'s region columns, cached."""
    found = _flags_by_table.get(table.fullname)
    if found is None:
        found = _flags_by_table[table.fullname] = {
            c.key: (c.name, flag) for c, flag in _columns(table)
        }
    return found


_flags_by_table: dict[str, dict[str, tuple[str, RegionFlag]]] = {}


def _check_row(table: Table, row: Mapping[str, Any], region: str) -> None:
    for key, column, flag in _guarded(table.fullname, tuple(row)):
        value = row[key]
        # A list is a column's values as one array (INSERT … SELECT FROM unnest(…)).
        for item in value if isinstance(value, list) else (value,):
            check_value(table.name, column, flag, item, region)


@functools.lru_cache(maxsize=1024)
def _guarded(table: str, keys: tuple[str, ...]) -> tuple[tuple[str, str, RegionFlag], ...]:
    """The bind keys among ``keys`` that hold a region column, and which: every row of an
    executemany has the same keys, so the key scan runs once per statement shape, not
    once per row (it was most of a webhook batch's guard)."""
    flags, found = _flags_by_table[table], []
    for key in keys:
        name = key if key in flags else None
        if name is None and (m := _MULTI_VALUES.match(key)) and m.group(1) in flags:
            name = m.group(1)  # a multi-row VALUES clause binds column_m1, column_m2, …
        if name is not None:
            column, flag = flags[name]
            found.append((key, column, flag))
    return tuple(found)
