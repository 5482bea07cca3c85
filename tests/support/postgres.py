"""The local PostgreSQL server (``scripts/ci-services.sh`` starts it in CI): fresh databases for
tests, and a Dagster instance configured as a deployment's (``dagster-postgres.yaml``).

Tests that need it are skipped, with the reason, when no server accepts connections on
``$PGHOST:$PGPORT`` (default 127.0.0.1:5432).
"""

from __future__ import annotations

import contextlib
import getpass
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
POSTGRES_YAML = REPO_ROOT / "dagster-postgres.yaml"


def server() -> dict[str, str]:
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", getpass.getuser()),
        "password": os.environ.get("PGPASSWORD", ""),
    }


def connect(settings: dict[str, str], dbname: str):
    import psycopg2

    connection = psycopg2.connect(dbname=dbname, connect_timeout=5, **settings)
    connection.autocommit = True
    return connection


@contextlib.contextmanager
def fresh_database(name: str) -> Iterator[dict[str, str]]:
    """A new, empty database ``name`` (an old one of that name is dropped first), dropped again
    on exit; its connection settings with ``dbname``. Skips the test when there is no server."""
    pytest.importorskip("psycopg2")
    settings = server()
    try:
        admin = connect(settings, "postgres")
    except Exception as error:  # psycopg2.OperationalError, or a DNS failure
        pytest.skip(
            f"PostgreSQL not reachable at {settings['user']}@{settings['host']}:"
            f"{settings['port']} ({' '.join(str(error).split())}); "
            "run scripts/ci-services.sh to start it"
        )
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield {**settings, "dbname": name}
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def database_url(database: dict[str, str]) -> str:
    """The ``postgresql://`` URL ``--results-store`` takes (the password stays in PGPASSWORD)."""
    return (
        f"postgresql://{database['user']}@{database['host']}:{database['port']}/"
        f"{database['dbname']}"
    )


def deployment_environment(database: dict[str, str]) -> dict[str, str]:
    """The DAGSTER_PG_* variables ``dagster-postgres.yaml`` reads, for ``database``."""
    return {
        "DAGSTER_PG_USERNAME": database["user"],
        "DAGSTER_PG_PASSWORD": database["password"],
        "DAGSTER_PG_HOST": database["host"],
        "DAGSTER_PG_DB": database["dbname"],
        "DAGSTER_PG_PORT": str(database["port"]),
        "DAGSTER_EVENT_BATCH_SIZE": "1000",
    }


def write_dagster_home(home: Path) -> Path:
    """``home`` holding the repository's ``dagster-postgres.yaml`` verbatim as dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(POSTGRES_YAML.read_text())
    return home


def query(url: str, sql: str) -> list[tuple]:
    """The rows ``sql`` returns in the database at ``url``."""
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()
