"""A throw-away PostgreSQL database per benchmark run, with a unique name.

Each run creates its own database (``bench_<prefix>_<random>``), migrates into it and
drops it at the end (``WITH (FORCE)``: a crashed server's connections do not keep it),
so benchmarks never disturb one another, the test databases, or a parallel run of the
same benchmark.
"""

from __future__ import annotations

import secrets

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url


def libpq(url: str, database: str) -> str:
    """``url`` (an SQLAlchemy URL) as a libpq connection string for ``database``."""
    return make_url(url).set(drivername="postgresql", database=database).render_as_string(
        hide_password=False)


def create_database(url: str, prefix: str) -> tuple[str, str]:
    """A fresh, uniquely named database; returns its name and an SQLAlchemy URL to it."""
    name = f"bench_{prefix}_{secrets.token_hex(5)}"
    with psycopg.connect(libpq(url, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return name, make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, name: str) -> None:
    with psycopg.connect(libpq(url, "postgres"), autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def create_schema(url: str, database: str) -> tuple[str, str]:
    """Compatibility name: a fresh database named after ``database``; (name, URL)."""
    return create_database(url, database.removeprefix("aggregator_bench").strip("_") or "db")


def drop_schema(url: str, database: str, schema: str) -> None:
    """Compatibility name: drops the database :func:`create_schema` returned as ``schema``."""
    drop_database(url, schema)
