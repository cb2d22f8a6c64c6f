"""A throw-away schema per benchmark run in a PostgreSQL database, created if missing.

Each run migrates into its own schema (``search_path`` in the URL) and drops it at the
end, so benchmarks never disturb one another or the test databases.
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


def create_schema(url: str, database: str) -> tuple[str, str]:
    """A fresh schema in ``database``; returns its name and an SQLAlchemy URL bound to it."""
    schema = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(libpq(url, "postgres"), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                         (database,)).fetchone() is None:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    with psycopg.connect(libpq(url, database), autocommit=True) as db:
        db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    bound = (make_url(url).set(database=database)
             .update_query_dict({"options": f"-csearch_path={schema}"})
             .render_as_string(hide_password=False))
    return schema, bound


def drop_schema(url: str, database: str, schema: str) -> None:
    with psycopg.connect(libpq(url, database), autocommit=True) as db:
        db.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
