"""Keeping the team server up: a supervisor loop, and the systemd unit that runs it at boot.

``python -m invaders.tracking.server supervise`` starts PostgreSQL and the MLflow server, then checks them
every ``CHECK_SECONDS``: a stopped PostgreSQL is started again, an MLflow server that died (a crash, an
out-of-memory kill, SIGKILL) or that stopped answering ``/health`` for ``HUNG_SECONDS`` is stopped (its whole
process group) and started again; the logs are rotated (``server.rotate_log``). SIGTERM or SIGINT stop both
servers and end it. systemd runs it (``unit``) and restarts the supervisor itself if it ever fails.
"""

from __future__ import annotations

import getpass
import json
import os
import signal
import sys
import time
from pathlib import Path

from invaders.tracking.server import (
    Layout,
    ServerError,
    healthy,
    mlflow_pid,
    pg_running,
    read_state,
    reap,
    record_pid,
    rotate_log,
    say,
    server_logs,
    start,
    start_postgres,
    stop,
    stop_mlflow,
)

CHECK_SECONDS = 1.0  # between two checks of both servers
HUNG_SECONDS = 60.0  # /health failing this long while the process lives: the server is restarted
RETRY_SECONDS = 5.0  # after a failed restart (a port still taken, PostgreSQL not ready), before the next try


def supervise(layout: Layout, **start_options) -> None:
    """Run the server in ``layout`` until SIGTERM/SIGINT, restarting what stops (``start_options``: ``start``'s)."""
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stopping.append(number))
    url = start(layout, **start_options)
    record_pid(layout.supervisor_pid, os.getpid())  # `stop` ends the supervisor first, not only what it watches
    local = read_state(layout)["url"]  # how this machine reaches it
    say(f"supervising the MLflow server on {url} and PostgreSQL (checks every {CHECK_SECONDS:g} s)")
    silent_since = None
    try:
        while not stopping:
            time.sleep(CHECK_SECONDS)
            if stopping:
                break
            for log in server_logs(layout):
                rotate_log(log)
            try:
                silent_since = _check(layout, local, silent_since, start_options)
            except ServerError as error:
                say(f"restart failed: {error}; next try in {RETRY_SECONDS:g} s")
                time.sleep(RETRY_SECONDS)
    finally:
        stopped = stop(layout)
        layout.supervisor_pid.unlink(missing_ok=True)
        say(f"supervisor stopped: {', '.join(stopped) or 'nothing was running'}")


def _check(layout: Layout, url: str, silent_since: float | None, start_options: dict) -> float | None:
    """One round of checks; returns since when the live server has not answered (None: it answers)."""
    if not pg_running(layout):
        say("PostgreSQL was down: starting it")
        start_postgres(layout)
    if layout.pid.exists():
        reap(int(json.loads(layout.pid.read_text())["pid"]))  # our child: a dead one is a zombie until reaped
    if mlflow_pid(layout) is None:
        say("the MLflow server stopped: starting it again")
        stop_mlflow(layout)  # what is left of its process group
        start(layout, **start_options)
        return None
    if healthy(url):
        return None
    silent_since = silent_since or time.monotonic()
    if time.monotonic() - silent_since > HUNG_SECONDS:
        say(f"the MLflow server has not answered /health for {HUNG_SECONDS:g} s: restarting it")
        stop_mlflow(layout)
        start(layout, **start_options)
        return None
    return silent_since


def unit(layout: Layout, host: str, port: int, repo: Path, public_url: str = "") -> str:
    """A systemd unit that runs the supervisor at boot: ``make server-unit`` writes it, the admin installs it."""
    user = "" if os.geteuid() == 0 else f"User={getpass.getuser()}\n"  # as root, PostgreSQL runs as postgres
    command = f"{sys.executable} -m invaders.tracking.server --dir {layout.root} supervise --host {host} --port {port}"
    if public_url:
        command += f" --public-url {public_url}"
    return (
        "[Unit]\n"
        f"Description=invaders team tracking server (PostgreSQL + MLflow) in {layout.root}\n"
        "After=network.target\n\n"
        "[Service]\n"
        "Type=simple\n"
        f"{user}"
        f"WorkingDirectory={repo}\n"
        f"ExecStart={command}\n"
        "# SIGTERM to the supervisor stops the MLflow server, then PostgreSQL; whatever is left after\n"
        "# TimeoutStopSec is killed (KillMode=mixed). A failed supervisor is started again.\n"
        "KillMode=mixed\n"
        "TimeoutStopSec=90\n"
        "Restart=on-failure\n"
        "RestartSec=5\n\n"
        "[Install]\n"
        "WantedBy=multi-user.target\n"
    )
