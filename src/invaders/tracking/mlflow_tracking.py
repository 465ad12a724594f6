"""The stages' runs in MLflow: the store, the run lifecycle, reading runs back (the tracking package is
the only code that imports mlflow).

One stage run is one MLflow run (``StageRun``; the stage logs to the ``Run`` it yields, see
``invaders.tracking.run``), tagged with the stage, the git commit and the DVC experiment. The store is
resolved from ``DVC_ROOT`` so queued and temporary ``dvc exp run``s, which execute in a copy of the
repository, log to the same store: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<repo>/mlflow.db``
with artifacts in ``<repo>/mlruns``.
"""

from __future__ import annotations

import base64
import fcntl
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from invaders.errors import TrackingError
from invaders.names import Tag, metric_column, param_column, tag_column
from invaders.repository import project_root, provenance
from invaders.tracking.run import HeldMetrics, MetricRow, Run, metric_rows

# Makes the MLflow UI open the experiment on its training-runs table, not the GenAI overview.
_EXPERIMENT_TAGS = {Tag.EXPERIMENT_KIND: "custom_model_development"}
_BATCH_LIMIT = 100  # params and metrics per log_batch call, below MLflow's limits


def tracking_uri(root: Path | None = None) -> str:
    root = root or project_root()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


# MLflow's client retries a dead server for ~4 minutes by default; a stage should learn within seconds that
# the URL is wrong or the server went away (3 retries after 1, 2 and 4 s absorb a restart of its database).
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


def _run_tags(stage: str, root: Path) -> dict[str, str]:
    source = provenance(root)
    return {
        Tag.STAGE: stage,
        Tag.DVC_STAGE: os.environ.get("DVC_STAGE", stage),
        Tag.DVC_EXP_NAME: source["experiment"],
        Tag.DVC_BASELINE_REV: os.environ.get("DVC_EXP_BASELINE_REV", source["commit"]),
        Tag.GIT_COMMIT: source["commit"],
        Tag.SOURCE_NAME: f"stages/{stage.replace('-', '_')}.py",
        Tag.SOURCE_TYPE: "LOCAL",
        Tag.HOST: socket.gethostname(),
        Tag.PID: str(os.getpid()),
    }


_RUN_NAMES = {"baseline": "baseline random"}  # a run's name until its stage says what it is


def run_name(what: str) -> str:
    """A run's name: ``what`` it is (``train 10k seed 0``) and the DVC experiment, if there is one."""
    experiment = os.environ.get("DVC_EXP_NAME", "workspace")
    return what if experiment == "workspace" else f"{what} ({experiment})"


def short_steps(steps: int) -> str:
    """Agent steps for a run name: ``10k``, ``1m``."""
    if steps >= 1_000_000:
        return f"{steps / 1e6:.3g}m"
    return f"{steps / 1e3:.3g}k" if steps >= 1000 else str(steps)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MlflowRun:
    """A ``StoredRun`` that sends to one MLflow run. Metrics are queued and sent in batches (one sqlite
    write costs ~7 ms), at the latest by ``flush``."""

    def __init__(self, client, run_id: str, resume_run_id: str | None = None):
        self.client = client
        self.run_id = run_id
        self.resume_run_id = resume_run_id
        self._queue: list[MetricRow] = []
        self._last_flush = time.monotonic()

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        if self.resume_run_id:
            # MLflow keeps a param's first value: a resumed run records new values (a longer
            # train.steps) as tags and logs only the params it does not have yet.
            logged = self.client.get_run(self.run_id).data.params
            self.set_tags(
                {
                    f"{Tag.RESUMED}{key}": value
                    for key, value in params.items()
                    if key in logged and logged[key] != str(value)
                }
            )
            params = {key: value for key, value in params.items() if key not in logged}
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), _BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=items[start : start + _BATCH_LIMIT])

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(items), _BATCH_LIMIT):  # one request per batch, not per tag (a server's ~10 ms)
            self.client.log_batch(self.run_id, tags=items[start : start + _BATCH_LIMIT])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self._queue += metric_rows(metrics, step)
        if len(self._queue) >= _BATCH_LIMIT * 5 or time.monotonic() - self._last_flush > 30:
            self.flush()

    def flush(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:_BATCH_LIMIT], self._queue[_BATCH_LIMIT:]
            self.write_rows(batch, {})
        self._last_flush = time.monotonic()

    def write_rows(self, rows: list[MetricRow], tags: dict[str, str]) -> None:
        """Send ``rows`` in batches, ``tags`` with the last one (with the rows, when they fit in one)."""
        from mlflow.entities import Metric, RunTag

        metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in rows]
        run_tags = [RunTag(key, str(value)) for key, value in tags.items()]
        for start in range(0, len(metrics), _BATCH_LIMIT):
            last = start + _BATCH_LIMIT >= len(metrics)
            self.client.log_batch(
                self.run_id, metrics=metrics[start : start + _BATCH_LIMIT], tags=run_tags if last else []
            )
        if run_tags and not metrics:
            self.client.log_batch(self.run_id, tags=run_tags)

    def stored_tag(self, key: str) -> str:
        return self.client.get_run(self.run_id).data.tags.get(key, "")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


class StageRun:
    """The MLflow run of one stage run: created, or resumed with ``resume_run_id`` (a run left by an
    interrupted attempt), then marked FINISHED, or FAILED or KILLED if the stage does not finish.

    Entering yields the ``Run`` the stage logs to: the ``MlflowRun``, or with ``hold_metrics`` that run
    inside ``HeldMetrics`` (what it holds is sent if the stage finishes, dropped if not). Entering also
    marks KILLED the runs that dead processes on this host left RUNNING.
    """

    def __init__(
        self,
        stage: str,
        experiment: str,
        resume_run_id: str | None = None,
        hold_metrics: bool = False,
        parent_run_id: str | None = None,  # a sweep trial's run: the stage's run is nested under it
    ):
        self.stage = stage
        self.resume_run_id = resume_run_id
        self.hold_metrics = hold_metrics
        self.parent_run_id = parent_run_id
        self.root = project_root()
        self.uri = tracking_uri(self.root)
        check_store(self.uri)
        self.client = client_for(self.uri)
        with server_errors(self.uri):  # a wrong login or a READ-only user is told here, before any work
            self.experiment_id = open_experiment(self.uri, experiment, self.root)
        self.run_id: str | None = None
        self.run: MlflowRun | None = None
        self.held: HeldMetrics | None = None

    def __enter__(self) -> Run:
        with server_errors(self.uri):
            return self._open()

    def _open(self) -> Run:
        from mlflow.entities import RunTag

        self._close_orphans()
        tags = _run_tags(self.stage, self.root)
        if self.parent_run_id:
            tags[Tag.PARENT_RUN_ID] = self.parent_run_id
        if self.resume_run_id:
            self.run_id = self.resume_run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.log_batch(self.run_id, tags=[RunTag(key, tags[key]) for key in (Tag.PID, Tag.HOST)])
        else:
            name = run_name(_RUN_NAMES.get(self.stage, self.stage))  # the stage may say more (Tag.RUN_NAME)
            self.run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=name).info.run_id
        self.run = MlflowRun(self.client, self.run_id, self.resume_run_id)
        if not self.hold_metrics:
            return self.run
        self.held = HeldMetrics(self.run)
        return self.held

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            status = "FINISHED"
        elif issubclass(kind, KeyboardInterrupt | SystemExit):
            status = "KILLED"
        else:
            status = "FAILED"
        problem = server_problem(self.uri, error) if error is not None else None
        if problem is not None:  # the server is gone: the run stays RUNNING for the attempt that resumes it
            raise problem from None
        with server_errors(self.uri):
            try:
                if self.held is not None and status == "FINISHED":
                    self.held.flush()  # else sent with the next checkpoint by the run that resumes, so never twice
                self.run.flush()
            finally:
                self.client.set_terminated(self.run_id, status=status)

    def _close_orphans(self) -> None:
        """Mark KILLED the runs of any stage left RUNNING by a process on this host that no longer exists."""
        host = socket.gethostname()
        for run in self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`{Tag.HOST}` = '{host}'",
            max_results=1000,
        ):
            pid = run.data.tags.get(Tag.PID, "")
            if pid.isdigit() and not _pid_alive(int(pid)):
                self.client.set_terminated(run.info.run_id, status="KILLED")


def stage_runs(experiment: str, stage: str) -> pd.DataFrame:
    """Every finished run of ``stage`` in ``experiment``: one row, with params/metrics/tags columns."""
    uri = tracking_uri()
    check_store(uri)
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame()
    rows, page = [], None
    while True:  # page by page: no cap on how many runs a store holds
        runs = client.search_runs(
            [found.experiment_id],
            filter_string=f"attributes.status = 'FINISHED' and tags.`{Tag.STAGE}` = '{stage}'",
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=page,
        )
        rows.extend(_row(run) for run in runs)
        page = runs.token
        if not page:
            return pd.DataFrame(rows)


def _row(run) -> dict[str, Any]:
    """A run as one row of ``stage_runs``' table."""
    row = {"run_id": run.info.run_id, "start_time": run.info.start_time}
    row.update({param_column(key): value for key, value in run.data.params.items()})
    row.update({metric_column(key): value for key, value in run.data.metrics.items()})
    row.update({tag_column(key): value for key, value in run.data.tags.items()})
    return row


def run_in_experiment(run_id: str, experiment: str) -> bool:
    """Whether ``run_id`` is a live run of ``experiment`` in this store (a resumed run continues it)."""
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    check_store(uri)
    client = client_for(uri)
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return False
    found = client.get_experiment_by_name(experiment)
    return found is not None and run.info.experiment_id == found.experiment_id and run.info.lifecycle_stage == "active"


def metric_history(run_id: str, key: str) -> pd.DataFrame:
    """A metric's values by step, as logged; empty if the run is not in this store."""
    from mlflow.exceptions import MlflowException

    try:
        history = client_for(tracking_uri()).get_metric_history(run_id, key)
    except MlflowException:
        history = []
    return pd.DataFrame({"step": [m.step for m in history], "value": [m.value for m in history]}).sort_values("step")


def download_artifact(run_id: str, path: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return Path(client_for(tracking_uri()).download_artifacts(run_id, path, str(destination)))
