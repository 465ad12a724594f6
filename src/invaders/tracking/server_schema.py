"""The database schemas of the team server, against what the installed MLflow expects, and their upgrade.

The server's PostgreSQL database holds two alembic-versioned schemas: MLflow's tracking store (table
``alembic_version``) and basic-auth's users and grants (``alembic_version_auth``). After an MLflow upgrade both
may be older than the new MLflow's; ``start`` then says so in one line (``check_schema``), and
``python -m invaders.tracking.server upgrade`` (``make server-upgrade``) backs up, migrates both, and starts.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

from invaders.tracking.server import Layout, ServerError, database_uri, load_secrets, psql, server_env

_REVISION = re.compile(r"^(down_)?revision\s*(?::[^=]+)?=\s*['\"]?([0-9a-f]+|None)['\"]?", re.MULTILINE)


@dataclass(frozen=True)
class Schema:
    name: str  # how a message calls it
    version_table: str
    migrations: str  # folder of the alembic revisions, inside the mlflow package


SCHEMAS = (
    Schema("MLflow schema", "alembic_version", "store/db_migrations/versions"),
    Schema("auth schema", "alembic_version_auth", "server/auth/db/migrations/versions"),
)


@cache
def known_revisions(schema: Schema) -> tuple[str, frozenset[str]]:
    """(head, every revision) of the installed MLflow's migrations, read from the revision files' headers
    (alembic would import each of them, which takes seconds: docs/speed.md)."""
    folder = Path(find_spec("mlflow").submodule_search_locations[0]) / schema.migrations
    revisions, parents = set(), set()
    for script in folder.glob("*.py"):
        for is_parent, value in _REVISION.findall(script.read_text()):
            (parents if is_parent else revisions).add(value)
    heads = revisions - parents
    if len(heads) != 1:
        raise ServerError(f"{folder}: {len(heads)} alembic heads ({sorted(heads)}), expected one")
    return heads.pop(), frozenset(revisions)


def database_revision(layout: Layout, schema: Schema) -> str | None:
    """The revision the server's database is at (None: that schema was never created)."""
    exists = psql(
        layout, f"SELECT to_regclass('public.{schema.version_table}') IS NOT NULL", "reading the schema", "mlflow"
    )
    if exists.strip() != "t":
        return None
    found = psql(layout, f"SELECT version_num FROM {schema.version_table}", "reading the schema", "mlflow")
    return found.strip() or None


def schema_problems(layout: Layout) -> tuple[list[str], list[str]]:
    """(schemas older than the installed MLflow's, schemas it does not know) as one phrase each."""
    older, newer = [], []
    for schema in SCHEMAS:
        current = database_revision(layout, schema)
        head, revisions = known_revisions(schema)
        if current is None or current == head:
            continue
        (older if current in revisions else newer).append(f"{schema.name} {current}, expected {head}")
    return older, newer


def check_schema(layout: Layout) -> None:
    """Refuse, in one line, to start MLflow on a database whose schemas are not the installed MLflow's."""
    older, newer = schema_problems(layout)
    installed = version("mlflow")
    if newer:
        raise ServerError(
            f"the database was written by an MLflow newer than the installed {installed} ({'; '.join(newer)}): "
            "install that MLflow, or restore a backup made before (make server-restore FILE=...)"
        )
    if older:
        raise ServerError(
            f"the database's schema is older than MLflow {installed}'s ({'; '.join(older)}): "
            "run `make server-upgrade` (backs up, migrates, starts)"
        )


def migrate(layout: Layout) -> list[str]:
    """Migrate both schemas to the installed MLflow's heads (PostgreSQL up, the MLflow server stopped);
    returns what was migrated."""
    older, newer = schema_problems(layout)
    if newer:
        check_schema(layout)  # says it in one line
    env = server_env(layout, load_secrets(layout))
    uri = database_uri(layout)
    steps = (
        ("MLflow schema", [str(Path(sys.executable).parent / "mlflow"), "db", "upgrade", uri]),
        ("auth schema", [sys.executable, "-m", "mlflow.server.auth", "db", "upgrade", "--url", uri]),
    )
    for name, command in steps:
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
            raise ServerError(f"migrating the {name} failed: {last[0]} (the backup made before is intact)")
    return older
