"""The team's tracking server: PostgreSQL and ``mlflow server`` with MLflow's logins on it, on this machine.

``python -m invaders.tracking.server start|stop|status|add-user`` (``make server``, ``make server-stop``,
``make server-status``, ``make server-user``). Everything lives in one folder (``.server/`` at the
repository root by default, git-ignored; ``--dir`` or ``INVADERS_SERVER_DIR``):

| path | what |
|---|---|
| ``secrets.json`` (0600) | admin password, Flask secret key, database password: made by the first start |
| ``pgpass`` (0600) | the database password for libpq (``PGPASSFILE``): no password in any URI or argv |
| ``auth.ini`` | MLflow's basic-auth settings: users in the same PostgreSQL, a login cache |
| ``server.json`` | the URL and ports, written by ``start`` |
| ``postgres/`` | the PostgreSQL cluster (``data/``, its socket folder, ``postgres.log``) |
| ``artifacts/`` | the artifacts, served through the server (``--serve-artifacts``) |
| ``mlflow.log``, ``mlflow.pid`` | the MLflow server's log and process (its process group is stopped) |
| ``users/NAME.env`` (0600) | a user's ``MLFLOW_TRACKING_*`` variables, made by ``add-user`` |

PostgreSQL refuses to run as root: as root its programs run as the ``postgres`` user (``runuser``).
Secrets reach the servers through files and environment variables, never argv (``ps`` shows argv).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
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

DEFAULT_PORT = 5050
ADMIN = "admin"
DATABASE = "mlflow"  # the database and its role
ACCESS = ("READ", "EDIT", "MANAGE")
# Fast settings (README "Team mode", measured by `make server-bench`): no job runner; a login cache so that a
# request does not re-hash the password (~70 ms); MLflow's Flask app under gunicorn, not uvicorn: uvicorn runs it
# behind FastAPI's middleware and a WSGI bridge that cost 15-25% of the server's CPU per request (the routes only
# FastAPI serves, OpenTelemetry trace ingestion, AI gateway, assistant, are not used here). Two sync workers let
# two requests run at once; the timeout lets a large artifact upload finish.
WORKERS = 2
GUNICORN_OPTS = "--timeout 600"
# MLflow's basic-auth app, with run requests authorized without loading the whole run (auth_app.py; the
# `mlflow.app` entry point in pyproject.toml). The users, grants and client are basic-auth's.
APP = "invaders-auth"
AUTH_CACHE_SECONDS = 300
# PostgreSQL acknowledges a commit before its WAL reaches the disk (~3 ms of fsync per write request, more on a
# busy disk). A crash of PostgreSQL or of the machine may lose the last <= 0.6 s of acknowledged writes (3 x
# wal_writer_delay); the database stays consistent, and a crash of the MLflow server alone loses nothing.
POSTGRES_OPTIONS = "-c synchronous_commit=off"


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
    def users(self) -> Path:
        return self.root / "users"


def default_dir() -> Path:
    from invaders.tracking.mlflow_tracking import project_root

    return Path(os.environ.get("INVADERS_SERVER_DIR") or project_root() / ".server").resolve()


def _say(message: str) -> None:
    print(f"server: {message}", file=sys.stderr, flush=True)


def _write_private(path: Path, text: str) -> None:
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
    _write_private(layout.secrets, json.dumps(values, indent=1) + "\n")
    _say(f"secrets made: {layout.secrets} (mode 0600; the admin's login is {ADMIN!r} and the password there)")
    return values


def _state(layout: Layout) -> dict:
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


def _pg_bin(name: str) -> str:
    """A PostgreSQL program: Debian keeps the server's in /usr/lib/postgresql/<version>/bin."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name), reverse=True)
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


def _run(command: list[str], what: str, stdin: str | None = None) -> str:
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


def _pg_running(layout: Layout) -> bool:
    if not (layout.data / "postmaster.pid").exists():
        return False
    done = subprocess.run(_as_owner([_pg_bin("pg_ctl"), "status", "-D", str(layout.data)]), capture_output=True)
    return done.returncode == 0


def _init_postgres(layout: Layout, password: str) -> None:
    """A private cluster: socket in its own 0700 folder (trusted), TCP on 127.0.0.1 with scram passwords."""
    _check_traversable(layout.root)
    layout.postgres.mkdir(mode=0o700, parents=True, exist_ok=True)
    layout.socket_dir.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        for path in (layout.postgres, layout.socket_dir):
            shutil.chown(path, "postgres", "postgres")
    _run(
        [_pg_bin("initdb"), "-D", str(layout.data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
         "--auth-local=trust", "--auth-host=scram-sha-256"],
        "initdb",
    )  # fmt: skip
    _start_postgres(layout)
    sql = (
        "SET log_min_error_statement = panic; SET log_statement = none;\n"  # the password never reaches the log
        f"CREATE ROLE {DATABASE} LOGIN PASSWORD '{password}';\n"
        f"CREATE DATABASE {DATABASE} OWNER {DATABASE};\n"
    )
    _psql(layout, sql, "creating the database")


def _psql(layout: Layout, sql: str, what: str) -> str:
    port = str(_state(layout)["pg_port"])
    command = [_pg_bin("psql"), "-h", str(layout.socket_dir), "-p", port, "-U", "postgres", "-d", "postgres"]
    return _run([*command, "-v", "ON_ERROR_STOP=1", "-q", "-At"], what, stdin=sql)


def _start_postgres(layout: Layout) -> None:
    if _pg_running(layout):
        return
    port = _state(layout)["pg_port"]
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={layout.socket_dir} "
        + POSTGRES_OPTIONS
    )
    _run(
        [_pg_bin("pg_ctl"), "start", "-w", "-t", "60", "-D", str(layout.data),
         "-l", str(layout.postgres / "postgres.log"), "-o", options],
        "starting PostgreSQL",
    )  # fmt: skip


def _stop_postgres(layout: Layout) -> bool:
    if not _pg_running(layout):
        return False
    _run([_pg_bin("pg_ctl"), "stop", "-w", "-t", "60", "-m", "fast", "-D", str(layout.data)], "stopping PostgreSQL")
    return True


# --- MLflow ---------------------------------------------------------------------------------------------------


def database_uri(layout: Layout) -> str:
    """The store's URI: no password in it (libpq reads ``PGPASSFILE``)."""
    return f"postgresql://{DATABASE}@127.0.0.1:{_state(layout)['pg_port']}/{DATABASE}"


def _write_config(layout: Layout, values: dict[str, str]) -> None:
    port = _state(layout)["pg_port"]
    _write_private(layout.pgpass, f"127.0.0.1:{port}:{DATABASE}:{DATABASE}:{values['database_password']}\n")
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


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), which tells a reused PID apart."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _mlflow_pid(layout: Layout) -> int | None:
    """The PID of the MLflow server this folder started, if it still runs."""
    if not layout.pid.exists():
        return None
    recorded = json.loads(layout.pid.read_text())
    pid = int(recorded["pid"])
    return pid if _process_start(pid) == recorded["start"] else None


def url_of(layout: Layout) -> str:
    state = _state(layout)
    if "url" not in state:
        raise ServerError(f"no server in {layout.root}: start it first (make server)")
    return state["url"]


def check_app(app: str) -> None:
    """MLflow finds ``--app-name`` among the installed ``mlflow.app`` entry points: say so before it fails."""
    from importlib.metadata import entry_points

    if app not in {entry.name for entry in entry_points(group="mlflow.app")}:
        raise ServerError(
            f"MLflow app {app!r} is not installed: run `make setup` (pip install -e . registers the project's)"
        )


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
        _say(warning)
    values = load_secrets(layout)
    state = _state(layout)
    if "pg_port" not in state:
        state["pg_port"] = _free_port()
        layout.state.write_text(json.dumps(state, indent=1) + "\n")
    if not (layout.data / "PG_VERSION").exists():
        _init_postgres(layout, values["database_password"])
    else:
        _start_postgres(layout)
    _write_config(layout, values)
    every_interface = host in ("0.0.0.0", "::")
    url = f"http://{'127.0.0.1' if every_interface else host}:{port}"  # how this machine reaches it
    public_url = public_url or (f"http://{socket.getfqdn()}:{port}" if every_interface else url)
    if _mlflow_pid(layout):
        running = _state(layout)
        _say(f"already running: {running.get('public_url', running.get('url', url))}")
        return running.get("public_url", running.get("url", url))
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
    layout.pid.write_text(json.dumps({"pid": process.pid, "start": _process_start(process.pid)}) + "\n")
    state.update(url=url, public_url=public_url, host=host, port=port)
    layout.state.write_text(json.dumps(state, indent=1) + "\n")
    deadline = time.monotonic() + 120
    while not healthy(url):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop_mlflow(layout)
            raise ServerError(f"the MLflow server did not start on {url}: see {layout.log}")
        time.sleep(0.2)
    return public_url


def _stop_mlflow(layout: Layout) -> bool:
    """Stop the MLflow server by its process group (its gunicorn workers with it): SIGTERM, then SIGKILL."""
    pid = _mlflow_pid(layout)
    layout.pid.unlink(missing_ok=True)
    if pid is None:
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
        _reap(pid)
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    _reap(pid)
    return True


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)  # when this process started it (tests): no zombie left
    except ChildProcessError:
        pass


def stop(layout: Layout) -> list[str]:
    """Stop the MLflow server, then PostgreSQL; returns what was running."""
    stopped = []
    if _stop_mlflow(layout):
        stopped.append("MLflow server")
    if (layout.data / "PG_VERSION").exists() and _stop_postgres(layout):
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


def add_user(layout: Layout, name: str, access: str, experiment: str) -> Path:
    """Create user ``name`` (or keep it) with ``access`` on ``experiment``; returns its 0600 env file."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}", name):
        raise ServerError(f"NAME={name!r}: a user name is 1-64 letters, digits, '_', '.', '@' or '-'")
    if access not in ACCESS:
        raise ServerError(f"ACCESS={access!r}: one of {', '.join(ACCESS)}")
    if name == ADMIN:
        raise ServerError(f"NAME={name!r}: that is the admin account (its password is in {layout.secrets})")
    env = admin_env(layout)
    os.environ.update(env)  # the admin's login, for this process only
    import warnings

    from invaders.tracking.mlflow_tracking import check_store, server_errors

    # the server's modules, which the auth client imports, warn about starlette
    warnings.filterwarnings("ignore", message=".*starlette.middleware.wsgi")
    from mlflow.server import get_app_client

    url = env["MLFLOW_TRACKING_URI"]
    check_store(url)
    with server_errors(url):
        return _grant(layout, get_app_client("basic-auth", tracking_uri=url), url, name, access, experiment)


def _grant(layout: Layout, auth, url: str, name: str, access: str, experiment: str) -> Path:
    from mlflow.exceptions import MlflowException

    from invaders.tracking.mlflow_tracking import open_experiment

    experiment_id = open_experiment(url, experiment)
    user_file = layout.users / f"{name}.env"
    try:
        auth.get_user(name)
        created = False
    except MlflowException:
        created = True
    if created:
        password = secrets.token_urlsafe(18)
        auth.create_user(name, password)
        layout.users.mkdir(mode=0o700, exist_ok=True)
        shared = _state(layout).get("public_url", url)  # what a teammate's machine reaches
        lines = [f"export MLFLOW_TRACKING_URI={shared}", f"export MLFLOW_TRACKING_USERNAME={name}"]
        _write_private(user_file, "\n".join([*lines, f"export MLFLOW_TRACKING_PASSWORD={password}", ""]))
    # The registered model of the same name holds the experiment's agents (tracking/models.py): an EDIT user
    # registers versions and moves the champion there too.
    for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", experiment)):
        try:
            auth.grant_user_permission(name, resource_type, resource_id, access)
        except MlflowException:  # had one already: replace it
            auth.revoke_user_permission(name, resource_type, resource_id)
            auth.grant_user_permission(name, resource_type, resource_id, access)
    return user_file


# --- Command line ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invaders.tracking.server", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=None, help="the server's folder (default .server/)")
    commands = parser.add_subparsers(dest="command", required=True)
    begin = commands.add_parser("start", help="start PostgreSQL and the MLflow server (made on first start)")
    begin.add_argument("--host", default="127.0.0.1", help="address to listen on (default loopback only)")
    begin.add_argument("--port", type=int, default=DEFAULT_PORT)
    begin.add_argument("--allowed-hosts", default="", help="Host headers the server accepts (MLflow's option)")
    begin.add_argument("--public-url", default="", help="the URL teammates use, written into their login files")
    commands.add_parser("stop", help="stop the MLflow server and PostgreSQL")
    commands.add_parser("status", help="say what runs")
    user = commands.add_parser("add-user", help="add a user with READ or EDIT rights on the experiment")
    user.add_argument("name")
    user.add_argument("access", type=str.upper)
    user.add_argument("--experiment", default=None, help="default: tracking.experiment of params.yaml")
    args = parser.parse_args(argv)
    layout = Layout((args.dir or default_dir()).resolve())
    try:
        if args.command == "start":
            if not 1 <= args.port <= 65535:
                raise ServerError(f"PORT={args.port}: a TCP port, 1-65535")
            began = time.monotonic()
            url = start(layout, args.host, args.port, args.allowed_hosts, args.public_url)
            _say(f"MLflow server on {url} ({time.monotonic() - began:.1f} s), data in {layout.root}")
            _say(f"add a user: make server-user NAME=alice ACCESS=EDIT (admin login: {ADMIN}, see {layout.secrets})")
        elif args.command == "stop":
            stopped = stop(layout)
            _say(f"stopped: {', '.join(stopped)}" if stopped else f"nothing was running in {layout.root}")
        elif args.command == "status":
            pid = _mlflow_pid(layout)
            running = pid is not None and healthy(url_of(layout))
            database = (layout.data / "PG_VERSION").exists() and _pg_running(layout)
            _say(
                f"MLflow server {'on ' + url_of(layout) if running else 'stopped'}, PostgreSQL {'up' if database else 'stopped'}"
            )
        elif args.command == "add-user":
            experiment = args.experiment or _experiment_name()
            path = add_user(layout, args.name, args.access, experiment)
            _say(f"{args.name}: {args.access} on experiment {experiment!r}; login in {path} (`. {path}` sets it)")
    except UserError as error:
        print(f"server: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def _experiment_name() -> str:
    from invaders.config import load_params
    from invaders.tracking.mlflow_tracking import project_root

    return load_params(project_root() / "params.yaml").tracking.experiment


if __name__ == "__main__":
    main()
