"""Backups of the team server, and their restore into a new server folder.

A backup is one tar archive, ``invaders-server-<UTC time>.tar`` (mode 0600: it holds the server's secrets,
the users' login files and their password hashes), in ``.server/backups/`` unless told otherwise:

| member | what |
|---|---|
| ``manifest.json`` | when, MLflow's and PostgreSQL's versions, both schema revisions |
| ``mlflow.dump`` | ``pg_dump -Fc`` of the database: runs, metrics, registered models, aliases, users, grants |
| ``secrets.json``, ``users/`` | the server's secrets and the users' login files, so the same logins work after restore |
| ``artifacts/`` | every artifact (the files behind the runs and model versions) |

``pg_dump`` reads one snapshot of the database while the server goes on writing, so the dump is consistent
(a ``log_batch`` is in it whole or not at all). The artifacts are copied after the dump: an artifact is
uploaded before the run or model version that names it is finished, so every artifact the dump refers to is
in the archive (later ones come along, unreferenced and harmless).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

from invaders.tracking.server import (
    DATABASE,
    Layout,
    ServerError,
    _as_owner,
    _free_port,
    init_postgres,
    pg_bin,
    pg_running,
    read_state,
    say,
    start_postgres,
    stop_postgres,
)

KEEP = 7  # backups kept in the folder by default: the newest ones
PREFIX = "invaders-server-"
MEMBERS = ("manifest.json", "mlflow.dump")  # what makes a file a backup


def backup_dir(layout: Layout) -> Path:
    return layout.root / "backups"


def _postgres_command(layout: Layout, program: str, *args: str) -> list[str]:
    port = str(read_state(layout)["pg_port"])
    connect = ["-h", str(layout.socket_dir), "-p", port, "-U", "postgres", "-d", DATABASE]
    return _as_owner([pg_bin(program, layout), *connect, *args])


def _stream(command: list[str], what: str, stdin=None, stdout=None) -> None:
    """Run a PostgreSQL program with binary input or output (a dump), its errors in one line."""
    done = subprocess.run(command, stdin=stdin, stdout=stdout or subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise ServerError(f"{what} failed: {last[0]}")


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mtime, member.mode = len(data), int(time.time()), 0o600
    archive.addfile(member, io.BytesIO(data))


def backup(layout: Layout, folder: Path | None = None, keep: int = KEEP) -> Path:
    """Write one archive of the server in ``layout`` (running or not) into ``folder``; keep the newest ``keep``."""
    from invaders.tracking.server_schema import SCHEMAS, database_revision

    if keep < 1:
        raise ServerError(f"KEEP={keep}: the number of backups to keep, 1 or more")
    if not (layout.data / "PG_VERSION").exists():
        raise ServerError(f"no server in {layout.root} to back up (make server makes one)")
    folder = (folder or backup_dir(layout)).resolve()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
    target = folder / f"{PREFIX}{stamp}.tar"
    started = not pg_running(layout)
    if started:
        start_postgres(layout)
    partial = folder / f".{target.name}.partial"
    try:
        manifest = {
            "created": stamp,
            "mlflow": version("mlflow"),
            "postgresql": (layout.data / "PG_VERSION").read_text().strip(),
            "schemas": {schema.version_table: database_revision(layout, schema) for schema in SCHEMAS},
        }
        with tempfile.TemporaryFile(dir=folder) as dump:
            _stream(_postgres_command(layout, "pg_dump", "-Fc"), "pg_dump", stdout=dump)
            dump.seek(0)
            descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as file, tarfile.open(fileobj=file, mode="w") as archive:
                _add_bytes(archive, "manifest.json", json.dumps(manifest, indent=1).encode() + b"\n")
                member = archive.gettarinfo(fileobj=dump, arcname="mlflow.dump")
                archive.addfile(member, dump)
                archive.add(layout.secrets, "secrets.json")
                if layout.users.is_dir():
                    archive.add(layout.users, "users")
                if layout.artifacts.is_dir():
                    archive.add(layout.artifacts, "artifacts")  # after the dump: see the module's docstring
                archive.close()
                file.flush()
                os.fsync(file.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        if started:
            stop_postgres(layout)
    for old in sorted(folder.glob(f"{PREFIX}*.tar"))[:-keep]:
        old.unlink()
    return target


def restore(archive_path: Path, layout: Layout) -> dict:
    """Bring the backup ``archive_path`` into ``layout``'s folder, which must hold no server yet; the server is
    left stopped (``make server`` starts it). Built beside the folder and renamed into place at the end, so a
    failed restore leaves nothing. Returns the backup's manifest."""
    if not archive_path.is_file():
        raise ServerError(f"FILE={archive_path}: no such file")
    try:
        with tarfile.open(archive_path, "r:") as archive:
            names = set(archive.getnames())
            if not set(MEMBERS) <= names:
                raise ServerError(f"FILE={archive_path}: not a server backup (no {' or '.join(MEMBERS)} in it)")
            manifest = json.load(archive.extractfile("manifest.json"))
    except tarfile.TarError:
        raise ServerError(f"FILE={archive_path}: not a server backup (not a tar archive)") from None
    root = layout.root
    if root.exists() and any(root.iterdir()):
        raise ServerError(f"--dir {root}: not empty; restore into a new folder (then point the team at it)")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Layout(Path(tempfile.mkdtemp(prefix=f".{root.name}.restoring-", dir=root.parent)))
    staging.root.chmod(0o711)  # as root, the postgres user reaches its cluster through it
    try:
        with tarfile.open(archive_path, "r:") as archive:
            archive.extractall(staging.root, filter="data")
        staging.secrets.chmod(0o600)
        if staging.users.is_dir():
            staging.users.chmod(0o700)  # the "data" filter gives extracted folders the default mode
        secrets = json.loads(staging.secrets.read_text())
        staging.state.write_text(json.dumps({"pg_port": _free_port()}, indent=1) + "\n")
        init_postgres(staging, secrets["database_password"])
        dump = staging.root / "mlflow.dump"
        with open(dump, "rb") as source:  # through stdin: as root, pg_restore runs as postgres
            restore_args = ("--no-owner", f"--role={DATABASE}", "--exit-on-error", "--single-transaction")
            _stream(_postgres_command(staging, "pg_restore", *restore_args), "pg_restore", stdin=source)
        stop_postgres(staging)
        dump.unlink()
        (staging.root / "manifest.json").unlink()
        if root.exists():
            root.rmdir()  # empty
        os.replace(staging.root, root)
    except BaseException:
        if (staging.data / "PG_VERSION").exists() and pg_running(staging):
            stop_postgres(staging)
        shutil.rmtree(staging.root, ignore_errors=True)
        raise
    say(f"restored {archive_path.name} (made {manifest['created']}, MLflow {manifest['mlflow']}) into {root}")
    return manifest
