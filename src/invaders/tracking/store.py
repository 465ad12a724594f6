"""The tracking store: where it is, whether it answers, its MLflow client, its errors told in one line.

The store is resolved from ``DVC_ROOT`` so queued and temporary ``dvc exp run``s, which execute in a copy of the
repository, log to the same store: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/mlflow.db`` with
artifacts in ``<repo>/mlruns``.
"""

from __future__ import annotations

import base64
import fcntl
import os
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from invaders.errors import TrackingError
from invaders.names import Tag
from invaders.repository import project_root

# Makes the MLflow UI open the experiment on its training-runs table, not the GenAI overview.
_EXPERIMENT_TAGS = {Tag.EXPERIMENT_KIND: "custom_model_development"}


def tracking_uri(root: Path | None = None) -> str:
    root = root or project_root()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


# MLflow's client retries a dead server for minutes by default (7 retries, doubling waits); a stage should learn
# within seconds that the URL is wrong or the server went away (3 retries after 1, 2 and 4 s absorb a restart of
# its database).
_HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def _is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _login_hint() -> str:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if not user or not os.environ.get("MLFLOW_TRACKING_PASSWORD"):
        return "the server needs a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
    return f"login refused for user {user!r}: check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"


def displayed(uri: str) -> str:
    """``uri`` as it may be printed: a login written into it (``http://user:password@host``) is cut out."""
    parts = urllib.parse.urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def check_store(uri: str) -> None:
    """Fail fast, before any long work, when the tracking store cannot be reached or refuses the login."""
    if _is_server(uri):
        base = uri.rstrip("/")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=10) as response:
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
        except (OSError, urllib.error.URLError) as error:
            reason = getattr(error, "reason", error)
            raise TrackingError(
                f"MLFLOW_TRACKING_URI = {displayed(uri)}: no MLflow server answers ({reason})"
            ) from None
        request = urllib.request.Request(f"{base}/api/2.0/mlflow/users/current")
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if user and password:
            request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as error:  # 404: a server without logins
            if error.code == 401:
                raise TrackingError(f"MLFLOW_TRACKING_URI = {displayed(uri)}: {_login_hint()} (HTTP 401)") from None
        except OSError as error:
            raise TrackingError(f"MLFLOW_TRACKING_URI = {displayed(uri)}: no MLflow server answers ({error})") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(
                f"MLFLOW_TRACKING_URI = {displayed(uri)}: folder {folder} does not exist or is not writable"
            )
    elif not uri.startswith(("file:", "databricks", "postgresql", "mysql", "mssql")):
        raise TrackingError(
            f"MLFLOW_TRACKING_URI = {displayed(uri)}: not a tracking URI (http://..., sqlite:///..., file:...)"
        )


def server_problem(uri: str, error: BaseException) -> TrackingError | None:
    """``error`` told in one line if it is the server refusing a login or a write, or not answering."""
    from mlflow.exceptions import MlflowException

    if not _is_server(uri) or not isinstance(error, MlflowException):
        return None
    message = str(error)
    if error.error_code == "UNAUTHENTICATED" or "error code 401" in message:
        return TrackingError(f"MLFLOW_TRACKING_URI = {displayed(uri)}: {_login_hint()} (HTTP 401)")
    if error.error_code == "PERMISSION_DENIED" or "error code 403" in message:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
        return TrackingError(
            f"MLFLOW_TRACKING_URI = {displayed(uri)}: user {user!r} may read but not write here (HTTP 403); "
            "ask the server's admin for EDIT rights (make server-user NAME=... ACCESS=EDIT)"
        )
    if "failed with exception" in message or "failed with timeout" in message:
        reason = "connection refused" if "refused" in message.lower() else "no answer"
        return TrackingError(
            f"MLFLOW_TRACKING_URI = {displayed(uri)}: the MLflow server stopped answering ({reason}); "
            "once it is back, the same command resumes from the last checkpoint"
        )
    return None


@contextmanager
def server_errors(uri: str):
    """Turn a server's refusal or silence into a one-line ``TrackingError``."""
    try:
        yield
    except Exception as error:
        problem = server_problem(uri, error)
        if problem is None:
            raise
        raise problem from None


@contextmanager
def _store_lock(uri: str):
    """Serialise store creation between concurrent stages: a racing sqlite migration breaks the DB."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    with open(uri.removeprefix("sqlite:///") + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def client_for(uri: str):
    """An MLflow client of the store at ``uri`` (the first client of a new sqlite store creates it, under a lock)."""
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    if _is_server(uri):
        for key, value in _HTTP_SETTINGS.items():
            os.environ.setdefault(key, value)
    with _store_lock(uri):  # the first client of a new sqlite store creates and migrates it
        return MlflowClient(tracking_uri=uri)


def open_experiment(uri: str, name: str, root: Path | None = None) -> str:
    """The id of experiment ``name``, created (once, under a lock) if needed."""
    from mlflow.exceptions import MlflowException

    root = root or project_root()
    client = client_for(uri)
    with _store_lock(uri):
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            location = (root / "mlruns" / name).as_uri() if uri.startswith("sqlite:") else None
            try:
                return client.create_experiment(name, artifact_location=location, tags=_EXPERIMENT_TAGS)
            except MlflowException as error:  # a server has no file lock: another stage created it first
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                experiment = client.get_experiment_by_name(name)
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
