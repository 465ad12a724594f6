"""The team's tracking server: PostgreSQL and ``mlflow server`` with MLflow's logins on it, on this machine.

``python -m invaders.tracking.server start|stop|status`` (``make server``, ``make server-stop``,
``make server-status``); the users, backups, upgrades and supervision (docs/server.md) are subcommands of the
same entry point, in ``server_users.py``, ``server_backup.py``, ``server_schema.py`` and ``supervisor.py``.
Everything lives in one folder (``.server/`` at the repository root by default, git-ignored; ``--dir`` or
``INVADERS_SERVER_DIR``):

| path | what |
|---|---|
| ``secrets.json`` (0600) | admin password, Flask secret key, database password: made by the first start |
| ``pgpass`` (0600) | the database password for libpq (``PGPASSFILE``): no password in any URI or argv |
| ``auth.ini`` | MLflow's basic-auth settings: users in the same PostgreSQL, a login cache |
| ``server.json`` | the URL and ports, written by ``start`` |
| ``postgres/`` | the PostgreSQL cluster (``data/``, its socket folder, ``postgres.log``) |
| ``artifacts/`` | the artifacts, served through the server (``--serve-artifacts``) |
| ``mlflow.log``, ``mlflow.pid`` | the MLflow server's log and process (its process group is stopped) |
| ``users/NAME.env`` (0600) | a user's ``MLFLOW_TRACKING_*`` variables, made by ``add-user``, ``reset-password`` |
| ``backups/`` | the archives ``backup`` writes (0600), the newest 7 by default |
| ``invaders-server.service`` | the systemd unit ``unit`` writes |

PostgreSQL refuses to run as root: as root its programs run as the ``postgres`` user (``runuser``).
Secrets reach the servers through files and environment variables, never argv (``ps`` shows argv).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from invaders.errors import UserError
from invaders.repository import project_root

DEFAULT_PORT = 5050
ADMIN = "admin"
DATABASE = "mlflow"  # the database and its role
ACCESS = ("READ", "EDIT", "MANAGE")
# Fast settings (what each saves: docs/server.md, "Figures"): no job runner; a login cache so that a request
# does not re-hash the password; MLflow's Flask app under gunicorn, not uvicorn: uvicorn runs it behind FastAPI's
# middleware and a WSGI bridge that cost CPU on every request (the routes only FastAPI serves, OpenTelemetry
# trace ingestion, AI gateway, assistant, are not used here). Two sync workers let two requests run at once; the
# timeout lets a large artifact upload finish.
WORKERS = 2
GUNICORN_OPTS = "--timeout 600"
# MLflow's basic-auth app, with run requests authorized without loading the whole run (auth_app.py; the
# `mlflow.app` entry point in pyproject.toml). The users, grants and client are basic-auth's.
APP = "invaders-auth"
# Each worker keeps a login it checked this long: a password reset or changed, or a user removed, is refused at
# once by the worker that handled the change, and by the other within this time (one re-hash per user and
# worker every 10 s costs nothing measurable).
AUTH_CACHE_SECONDS = 10
# PostgreSQL acknowledges a commit before its WAL reaches the disk (no fsync in each write request: docs/server.md,
# "Figures"). A crash of PostgreSQL or of the machine may lose the last <= 0.6 s of acknowledged writes (3 x
# wal_writer_delay); the database stays consistent, and a crash of the MLflow server alone loses nothing.
POSTGRES_OPTIONS = "-c synchronous_commit=off"
# The MLflow versions whose basic-auth `invaders-auth` was tested against (tests/test_server.py, the permission
# table): it replaces private functions of basic-auth, which another version may change without a word.
AUTH_APP_VERIFIED = ("3.17.2",)
# mlflow.log and postgres.log are rotated past this size (copy, then truncate: both servers append), keeping
# the newest LOG_FILES old ones (mlflow.log.1 the newest): at most LOG_BYTES * (LOG_FILES + 1) per log.
LOG_BYTES = 10 * 2**20  # bytes
LOG_FILES = 5
PG_LIB = Path("/usr/lib/postgresql")


class ServerError(UserError):
    """The server cannot be started, stopped or reached as asked."""


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def pgpass(self) -> Path:
        return self.root / "pgpass"

    @property
    def auth_ini(self) -> Path:
        return self.root / "auth.ini"

    @property
    def state(self) -> Path:
        return self.root / "server.json"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def data(self) -> Path:
        return self.postgres / "data"

    @property
    def socket_dir(self) -> Path:
        return self.postgres / "run"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def log(self) -> Path:
        return self.root / "mlflow.log"

    @property
    def pid(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def supervisor_pid(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def users(self) -> Path:
        return self.root / "users"


def default_dir() -> Path:
    return Path(os.environ.get("INVADERS_SERVER_DIR") or project_root() / ".server").resolve()


def say(message: str) -> None:
    print(f"server: {message}", file=sys.stderr, flush=True)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (created with mode 0600, never wider)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def load_secrets(layout: Layout) -> dict[str, str]:
    """The server's secrets, made on first use (admin password, Flask secret key, database password)."""
    if layout.secrets.exists():
        return json.loads(layout.secrets.read_text())
    values = {
        "admin_password": secrets.token_urlsafe(24),
        "flask_secret_key": secrets.token_hex(32),
        "database_password": secrets.token_urlsafe(24),
    }
    layout.root.mkdir(parents=True, exist_ok=True)
    write_private(layout.secrets, json.dumps(values, indent=1) + "\n")
    say(f"secrets made: {layout.secrets} (mode 0600; the admin's login is {ADMIN!r} and the password there)")
    return values


def read_state(layout: Layout) -> dict:
    return json.loads(layout.state.read_text()) if layout.state.exists() else {}


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, port: int) -> str | None:
    """What to tell someone who makes the server listen beyond this machine."""
    if _loopback(host):
        return None
    return (
        f"warning: listening on {host}: anyone who reaches port {port} can try logins, and without TLS "
        "passwords cross the network readable; put an HTTPS proxy in front"
    )


# --- PostgreSQL -----------------------------------------------------------------------------------------------


def pg_bin(name: str, layout: Layout | None = None) -> str:
    """A PostgreSQL program of the version that made ``layout``'s cluster (its ``PG_VERSION``), or of the newest
    installed one for a new cluster: Debian keeps each version's in /usr/lib/postgresql/<version>/bin, and a
    cluster only runs under the major version that made it."""
    made_by = layout.data / "PG_VERSION" if layout else None
    if made_by and made_by.exists():
        version = made_by.read_text().strip()
        program = PG_LIB / version / "bin" / name
        if not program.is_file():
            raise ServerError(
                f"the cluster in {layout.data} is PostgreSQL {version}, whose {name} is not installed: "
                f"apt-get install postgresql-{version}"
            )
        return str(program)
    versions = sorted(PG_LIB.glob("*/bin"), key=lambda path: int(path.parent.name), reverse=True)
    for folder in versions:
        if (folder / name).is_file():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise ServerError(
            f"PostgreSQL's {name} is not installed: run `make server-setup` (Debian's postgresql package)"
        )
    return found


def _as_owner(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def run_pg(command: list[str], what: str, stdin: str | None = None) -> str:
    done = subprocess.run(_as_owner(command), input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ServerError(f"{what} failed: {last[0]}")
    return done.stdout


def _check_traversable(folder: Path) -> None:
    """As root the cluster belongs to ``postgres``, which must be able to reach its folder."""
    if os.geteuid() != 0:
        return
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.stat().st_mode & 0o001:
            raise ServerError(
                f"{parent} (mode {parent.stat().st_mode & 0o777:o}): the postgres user cannot reach {folder}; "
                f"`chmod o+x {parent}` or pick another --dir"
            )


def pg_running(layout: Layout) -> bool:
    if not (layout.data / "postmaster.pid").exists():
        return False
    done = subprocess.run(_as_owner([pg_bin("pg_ctl", layout), "status", "-D", str(layout.data)]), capture_output=True)
    return done.returncode == 0


def init_postgres(layout: Layout, password: str) -> None:
    """A private cluster: socket in its own 0700 folder (trusted), TCP on 127.0.0.1 with scram passwords."""
    _check_traversable(layout.root)
    layout.postgres.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.socket_dir.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        for path in (layout.postgres, layout.socket_dir):
            shutil.chown(path, "postgres", "postgres")
    run_pg(
        [pg_bin("initdb"), "-D", str(layout.data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
         "--auth-local=trust", "--auth-host=scram-sha-256"],
        "initdb",
    )  # fmt: skip
    start_postgres(layout)
    sql = (
        "SET log_min_error_statement = panic; SET log_statement = none;\n"  # the password never reaches the log
        f"CREATE ROLE {DATABASE} LOGIN PASSWORD '{password}';\n"
        f"CREATE DATABASE {DATABASE} OWNER {DATABASE};\n"
    )
    psql(layout, sql, "creating the database")


def psql(layout: Layout, sql: str, what: str, database: str = "postgres") -> str:
    """Run ``sql`` as PostgreSQL's superuser over the cluster's private socket; returns the rows, one a line."""
    port = str(read_state(layout)["pg_port"])
    command = [pg_bin("psql", layout), "-h", str(layout.socket_dir), "-p", port, "-U", "postgres", "-d", database]
    return run_pg([*command, "-v", "ON_ERROR_STOP=1", "-q", "-At"], what, stdin=sql)


def start_postgres(layout: Layout) -> None:
    if pg_running(layout):
        return
    port = read_state(layout)["pg_port"]
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={layout.socket_dir} "
        + POSTGRES_OPTIONS
    )
    run_pg(
        [pg_bin("pg_ctl", layout), "start", "-w", "-t", "60", "-D", str(layout.data),
         "-l", str(layout.postgres / "postgres.log"), "-o", options],
        "starting PostgreSQL",
    )  # fmt: skip


def stop_postgres(layout: Layout) -> bool:
    if not pg_running(layout):
        return False
    run_pg(
        [pg_bin("pg_ctl", layout), "stop", "-w", "-t", "60", "-m", "fast", "-D", str(layout.data)],
        "stopping PostgreSQL",
    )
    return True


# --- MLflow ---------------------------------------------------------------------------------------------------


def database_uri(layout: Layout) -> str:
    """The store's URI: no password in it (libpq reads ``PGPASSFILE``)."""
    return f"postgresql://{DATABASE}@127.0.0.1:{read_state(layout)['pg_port']}/{DATABASE}"


def _write_config(layout: Layout, values: dict[str, str]) -> None:
    port = read_state(layout)["pg_port"]
    write_private(layout.pgpass, f"127.0.0.1:{port}:{DATABASE}:{DATABASE}:{values['database_password']}\n")
    layout.auth_ini.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = {database_uri(layout)}\n"
        f"admin_username = {ADMIN}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        f"auth_cache_ttl_seconds = {AUTH_CACHE_SECONDS}\n"
    )


def server_env(layout: Layout, values: dict[str, str]) -> dict[str, str]:
    """The MLflow server's environment: its secrets come from here and ``pgpass``, never from argv."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING_")}
    env.update(
        MLFLOW_AUTH_CONFIG_PATH=str(layout.auth_ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=values["admin_password"],
        MLFLOW_FLASK_SERVER_SECRET_KEY=values["flask_secret_key"],
        MLFLOW_BACKEND_STORE_URI=database_uri(layout),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        PGPASSFILE=str(layout.pgpass),
        PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
    )
    return env


def healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def _stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name ([0] state, [2] process group, [19] start time)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def _process_start(pid: int) -> str | None:
    """The start time of live process ``pid`` (clock ticks since boot), which tells a reused PID apart; None
    for a zombie (dead, not yet reaped by its parent)."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def _group_alive(leader: int, since: str) -> bool:
    """Whether a live process remains in the process group ``leader`` started at ``since``: when only the
    ``mlflow server`` process is killed, its gunicorn keeps answering on the port."""
    for proc in Path("/proc").iterdir():
        fields = _stat(int(proc.name)) if proc.name.isdigit() else []
        if len(fields) > 19 and fields[0] != "Z" and fields[2] == str(leader) and int(fields[19]) >= int(since):
            return True
    return False


def record_pid(path: Path, pid: int) -> None:
    path.write_text(json.dumps({"pid": pid, "start": _process_start(pid)}) + "\n")


def recorded_pid(path: Path) -> int | None:
    """The PID recorded in ``path`` if that process still runs (not another one that reused the number)."""
    if not path.exists():
        return None
    recorded = json.loads(path.read_text())
    pid = int(recorded["pid"])
    return pid if _process_start(pid) == recorded["start"] else None


def mlflow_pid(layout: Layout) -> int | None:
    """The PID of the MLflow server this folder started, if it still runs."""
    return recorded_pid(layout.pid)


def url_of(layout: Layout) -> str:
    state = read_state(layout)
    if "url" not in state:
        raise ServerError(f"no server in {layout.root}: start it first (make server)")
    return state["url"]


def unverified_auth_app(version: str) -> str | None:
    """Why ``invaders-auth`` must not run on MLflow ``version`` (None: it was verified there)."""
    if version in AUTH_APP_VERIFIED:
        return None
    return (
        f"invaders-auth was verified on MLflow {', '.join(AUTH_APP_VERIFIED)}, not on the installed {version}: "
        "install the locked version (make setup), or start MLflow's own app (--app basic-auth)"
    )


def check_app(app: str) -> None:
    """MLflow finds ``--app-name`` among the installed ``mlflow.app`` entry points: say so before it fails."""
    from importlib.metadata import entry_points, version

    if app not in {entry.name for entry in entry_points(group="mlflow.app")}:
        raise ServerError(
            f"MLflow app {app!r} is not installed: run `make setup` (pip install -e . registers the project's)"
        )
    problem = unverified_auth_app(version("mlflow")) if app == APP else None
    if problem:
        raise ServerError(problem)


def rotate_log(path: Path, max_bytes: int = LOG_BYTES, keep: int = LOG_FILES) -> bool:
    """Move ``path`` to ``path.1`` (older ones up to ``path.<keep>``) once it passes ``max_bytes``; the file is
    copied, then truncated, since the server writing it keeps it open (in append mode: it writes on at the new
    end). Lines written between the copy and the truncation are lost. Returns whether it rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for older in range(keep - 1, 0, -1):
        if path.with_name(f"{path.name}.{older}").exists():
            os.replace(path.with_name(f"{path.name}.{older}"), path.with_name(f"{path.name}.{older + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)
    return True


def server_logs(layout: Layout) -> list[Path]:
    return [layout.log, layout.postgres / "postgres.log"]


def start_database(layout: Layout) -> dict[str, str]:
    """Start PostgreSQL, making the secrets, the cluster and its database on first use; returns the secrets."""
    values = load_secrets(layout)
    state = read_state(layout)
    if "pg_port" not in state:
        state["pg_port"] = _free_port()
        layout.state.write_text(json.dumps(state, indent=1) + "\n")
    if not (layout.data / "PG_VERSION").exists():
        init_postgres(layout, values["database_password"])
    else:
        start_postgres(layout)
    _write_config(layout, values)
    return values


def start(
    layout: Layout,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    allowed_hosts: str = "",
    public_url: str = "",
    app: str = APP,
) -> str:
    """Start PostgreSQL and the MLflow server (creating both on first use); returns the URL teammates use
    (``public_url``, else this host's name when listening on every interface, else the local URL)."""
    check_app(app)  # before PostgreSQL starts
    warning = bind_warning(host, port)
    if warning:
        say(warning)
    values = start_database(layout)
    state = read_state(layout)
    every_interface = host in ("0.0.0.0", "::")
    url = f"http://{'127.0.0.1' if every_interface else host}:{port}"  # how this machine reaches it
    public_url = public_url or (f"http://{socket.getfqdn()}:{port}" if every_interface else url)
    if mlflow_pid(layout):
        running = read_state(layout)
        say(f"already running: {running.get('public_url', running.get('url', url))}")
        return running.get("public_url", running.get("url", url))
    from invaders.tracking.server_schema import check_schema

    check_schema(layout)  # before MLflow fails on it with "see mlflow.log"
    for log in server_logs(layout):
        rotate_log(log)
    layout.artifacts.mkdir(exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", app,
        "--host", host, "--port", str(port), "--workers", str(WORKERS), "--gunicorn-opts", GUNICORN_OPTS,
        "--serve-artifacts", "--artifacts-destination", str(layout.artifacts),
    ]  # fmt: skip
    if allowed_hosts:
        command += ["--allowed-hosts", allowed_hosts]
    with open(layout.log, "a") as log:
        process = subprocess.Popen(
            command, cwd=layout.root, env=server_env(layout, values), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    record_pid(layout.pid, process.pid)
    state.update(url=url, public_url=public_url, host=host, port=port)
    layout.state.write_text(json.dumps(state, indent=1) + "\n")
    deadline = time.monotonic() + 120
    while not healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_mlflow(layout)
            raise ServerError(f"the MLflow server did not start on {url}: see {layout.log}")
        time.sleep(0.2)
    return public_url


def stop_mlflow(layout: Layout) -> bool:
    """Stop the MLflow server by its process group (its gunicorn workers with it, also when the ``mlflow
    server`` process itself is gone): SIGTERM, then SIGKILL."""
    if not layout.pid.exists():
        return False
    recorded = json.loads(layout.pid.read_text())
    pid = int(recorded["pid"])
    reap(pid)
    layout.pid.unlink()
    if not _group_alive(pid, recorded["start"]):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        reap(pid)
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    reap(pid)
    return True


def reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # when this process started it (tests): no zombie left
    except ChildProcessError:
        pass


def stop(layout: Layout) -> list[str]:
    """Stop the supervisor if one runs (it would start the server again), the MLflow server, then PostgreSQL;
    returns what was running."""
    stopped = []
    supervisor = recorded_pid(layout.supervisor_pid)
    if supervisor not in (None, os.getpid()):
        os.kill(supervisor, signal.SIGTERM)  # it stops both servers itself
        deadline = time.monotonic() + 120
        while recorded_pid(layout.supervisor_pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped.append("supervisor")
    if stop_mlflow(layout):
        stopped.append("MLflow server")
    if (layout.data / "PG_VERSION").exists() and stop_postgres(layout):
        stopped.append("PostgreSQL")
    return stopped


# --- Users ----------------------------------------------------------------------------------------------------


def admin_env(layout: Layout) -> dict[str, str]:
    """``MLFLOW_TRACKING_*`` of the admin account."""
    return {
        "MLFLOW_TRACKING_URI": url_of(layout),
        "MLFLOW_TRACKING_USERNAME": ADMIN,
        "MLFLOW_TRACKING_PASSWORD": load_secrets(layout)["admin_password"],
    }


# --- Command line ---------------------------------------------------------------------------------------------


def _start_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    command.add_argument("--port", type=int, default=DEFAULT_PORT, help="TCP port of the MLflow server")
    command.add_argument("--allowed-hosts", default="", help="Host headers the server accepts (MLflow's option)")
    command.add_argument("--public-url", default="", help="the URL teammates use, written into their login files")
    command.add_argument("--app", default=APP, choices=(APP, "basic-auth"), help="the MLflow app with the logins")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m invaders.tracking.server", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="the server's folder (default .server/)")
    parser.add_argument(
        "--login", type=Path, default=None, help="a user's login file for the user commands (default: the admin)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _start_options(commands.add_parser("start", help="start PostgreSQL and the MLflow server (made on first start)"))
    commands.add_parser("stop", help="stop the MLflow server and PostgreSQL")
    commands.add_parser("status", help="say what runs")
    user = commands.add_parser("add-user", help="add a user with READ, EDIT or MANAGE rights on the experiment")
    user.add_argument("name")
    user.add_argument("access", type=str.upper)
    user.add_argument("--experiment", default=None, help="default: tracking.experiment of params.yaml")
    commands.add_parser("users", help="list the users with their rights")
    commands.add_parser("reset-password", help="a new password for a user, into their login file").add_argument("name")
    commands.add_parser("remove-user", help="remove a user, their grants and their login file").add_argument("name")
    commands.add_parser("passwd", help="change your own password (the one in --login), written back there")
    saving = commands.add_parser("backup", help="one archive of the database and the artifacts, while it runs")
    saving.add_argument("--to", type=Path, default=None, help="folder of the archives (default DIR/backups)")
    saving.add_argument("--keep", type=int, default=None, help="archives kept there, newest first (default 7)")
    bringing = commands.add_parser("restore", help="a backup into a new server folder (--dir), left stopped")
    bringing.add_argument("file", type=Path)
    _start_options(commands.add_parser("upgrade", help="back up, migrate the schemas to the installed MLflow, start"))
    _start_options(commands.add_parser("supervise", help="start, then restart what stops, until SIGTERM"))
    unit = commands.add_parser("unit", help="write a systemd unit that runs `supervise` at boot")
    unit.add_argument("--host", default="127.0.0.1")
    unit.add_argument("--port", type=int, default=DEFAULT_PORT)
    unit.add_argument("--public-url", default="", help="the URL teammates use, written into their login files")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    layout = Layout((args.dir or default_dir()).resolve())
    try:
        if hasattr(args, "port") and not 1 <= args.port <= 65535:
            raise ServerError(f"PORT={args.port}: a TCP port, 1-65535")
        _run_command(args, layout)
    except UserError as error:
        print(f"server: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _run_command(args: argparse.Namespace, layout: Layout) -> None:
    from invaders.tracking import server_backup, server_users

    login = server_users.read_login(args.login) if args.login else None
    options = {key: getattr(args, key, None) for key in ("host", "port", "allowed_hosts", "public_url", "app")}
    began = time.monotonic()
    if args.command == "start":
        url = start(layout, **options)
        say(f"MLflow server on {url} ({time.monotonic() - began:.1f} s), data in {layout.root}")
        say(f"add a user: make server-user NAME=alice ACCESS=EDIT (admin login: {ADMIN}, see {layout.secrets})")
    elif args.command == "stop":
        stopped = stop(layout)
        say(f"stopped: {', '.join(stopped)}" if stopped else f"nothing was running in {layout.root}")
    elif args.command == "status":
        running = mlflow_pid(layout) is not None and healthy(url_of(layout))
        database = (layout.data / "PG_VERSION").exists() and pg_running(layout)
        mlflow = "on " + url_of(layout) if running else "stopped"
        say(f"MLflow server {mlflow}, PostgreSQL {'up' if database else 'stopped'}")
    elif args.command == "add-user":
        experiment = args.experiment or _experiment_name()
        path = server_users.add_user(layout, args.name, args.access, experiment, login)
        say(f"{args.name}: {args.access} on experiment {experiment!r}; login in {path} (`. {path}` sets it)")
    elif args.command == "users":
        for user in server_users.list_users(layout, login):
            rights = "admin: every right" if user.is_admin else "; ".join(user.grants) or "no grants"
            print(f"{user.name}\t{rights}")
        say("anything not granted: READ (auth.ini's default_permission)")
    elif args.command == "reset-password":
        path = server_users.reset_password(layout, args.name, login)
        say(f"{args.name}: new password in {path} (the old one no longer works)")
    elif args.command == "remove-user":
        server_users.remove_user(layout, args.name, login)
        say(f"{args.name}: removed, with their grants and login file")
    elif args.command == "passwd":
        if not args.login:
            raise ServerError("passwd needs --login FILE: your login file, where the new password goes")
        server_users.change_own_password(args.login)
        say(f"new password in {args.login}")
    elif args.command == "backup":
        keep = server_backup.KEEP if args.keep is None else args.keep
        archive = server_backup.backup(layout, args.to, keep)
        size = archive.stat().st_size / 2**20
        say(f"backup {archive} ({size:.1f} MiB, {time.monotonic() - began:.1f} s; the newest {keep} kept)")
    elif args.command == "restore":
        server_backup.restore(args.file.resolve(), layout)
        say(f"restored in {time.monotonic() - began:.1f} s; start it: make server (--dir {layout.root})")
    elif args.command == "upgrade":
        from invaders.tracking.server_schema import migrate

        supervisor = recorded_pid(layout.supervisor_pid)
        if supervisor:
            raise ServerError(
                f"a supervisor (PID {supervisor}) would restart the server mid-upgrade: stop it first "
                "(systemctl stop invaders-server, or make server-stop), upgrade, then start it again"
            )
        stop_mlflow(layout)
        start_postgres(layout)
        archive = server_backup.backup(layout)
        say(f"backed up to {archive}")
        migrated = migrate(layout)
        say(
            f"migrated to the installed MLflow's schemas (were: {'; '.join(migrated)})"
            if migrated
            else "the schemas were already the installed MLflow's"
        )
        say(f"MLflow server on {start(layout, **options)} ({time.monotonic() - began:.1f} s)")
    elif args.command == "supervise":
        from invaders.tracking.supervisor import supervise

        supervise(layout, **options)
    elif args.command == "unit":
        from invaders.tracking.supervisor import unit

        path = layout.root / "invaders-server.service"
        layout.root.mkdir(parents=True, exist_ok=True)
        path.write_text(unit(layout, args.host, args.port, project_root(), args.public_url))
        say(f"wrote {path}; install it: cp {path} /etc/systemd/system/ && systemctl enable --now invaders-server")


def _experiment_name() -> str:
    from invaders.config import load_params

    return load_params(project_root() / "params.yaml").tracking.experiment


if __name__ == "__main__":
    main()
