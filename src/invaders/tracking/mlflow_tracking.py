"""The one module that talks to MLflow.

One stage run is one MLflow run, tagged with the stage, the git commit and the DVC experiment. The
store is resolved from ``DVC_ROOT`` so queued and temporary ``dvc exp run``s, which execute in a copy
of the repository, log to the same store: ``MLFLOW_TRACKING_URI`` if set, else
``sqlite:///<repo>/mlflow.db`` with artifacts in ``<repo>/mlruns``.
"""

from __future__ import annotations

import fcntl
import math
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from invaders.errors import TrackingError

# Makes the MLflow UI open the experiment on its training-runs table, not the GenAI overview.
_EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
_BATCH_LIMIT = 100  # params and metrics per log_batch call, below MLflow's limits


def project_root() -> Path:
    """The repository root: DVC's ``DVC_ROOT`` inside a stage, else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def tracking_uri(root: Path | None = None) -> str:
    root = root or project_root()
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"


def check_store(uri: str) -> None:
    """Fail fast, before any long work, when the tracking store cannot be reached."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=10) as response:
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
        except (OSError, urllib.error.URLError) as error:
            reason = getattr(error, "reason", error)
            raise TrackingError(f"MLFLOW_TRACKING_URI = {uri}: no MLflow server answers ({reason})") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"MLFLOW_TRACKING_URI = {uri}: folder {folder} does not exist or is not writable")
    elif not uri.startswith(("file:", "databricks", "postgresql", "mysql", "mssql")):
        raise TrackingError(f"MLFLOW_TRACKING_URI = {uri}: not a tracking URI (http://..., sqlite:///..., file:...)")


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


def _client(uri: str):
    import logging

    from mlflow.tracking import MlflowClient

    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _store_lock(uri):  # the first client of a new sqlite store creates and migrates it
        return MlflowClient(tracking_uri=uri)


def open_experiment(uri: str, name: str, root: Path | None = None) -> str:
    """The id of experiment ``name``, created (once, under a lock) if needed."""
    from mlflow.exceptions import MlflowException

    root = root or project_root()
    client = _client(uri)
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


def git_commit(root: Path) -> str:
    """The commit checked out in ``root``, or "unknown" outside a git work tree."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _run_tags(stage: str, root: Path) -> dict[str, str]:
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or git_commit(root)
    return {
        "invaders.stage": stage,
        "dvc.stage": os.environ.get("DVC_STAGE", stage),
        "dvc.exp_name": os.environ.get("DVC_EXP_NAME", "workspace"),
        "dvc.baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", commit),
        "mlflow.source.git.commit": commit,
        "mlflow.source.name": f"stages/{stage.replace('-', '_')}.py",
        "mlflow.source.type": "LOCAL",
        "invaders.host": socket.gethostname(),
        "invaders.pid": str(os.getpid()),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class StageRun:
    """One MLflow run for one stage run; marked FAILED or KILLED if the stage does not finish.

    ``resume_run_id`` continues a run left by an interrupted stage. With ``hold_metrics`` metrics are
    sent only by ``flush_checkpoint`` (and at the end), so that a resumed run logs every step once.
    """

    def __init__(self, stage: str, experiment: str, resume_run_id: str | None = None, hold_metrics: bool = False):
        self.stage = stage
        self.resume_run_id = resume_run_id
        self.hold_metrics = hold_metrics
        self.root = project_root()
        self.uri = tracking_uri(self.root)
        check_store(self.uri)
        self.client = _client(self.uri)
        self.experiment_id = open_experiment(self.uri, experiment, self.root)
        self.run_id: str | None = None
        self._pending: list[Any] = []
        self._last_flush = time.monotonic()

    def __enter__(self) -> StageRun:
        self._close_orphans()
        tags = _run_tags(self.stage, self.root)
        if self.resume_run_id:
            self.run_id = self.resume_run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.set_tags({"invaders.pid": tags["invaders.pid"], "invaders.host": tags["invaders.host"]})
        else:
            run_name = f"{self.stage}-{tags['dvc.exp_name']}"
            self.run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=run_name).info.run_id
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            status = "FINISHED"
        elif issubclass(kind, KeyboardInterrupt | SystemExit):
            status = "KILLED"
        else:
            status = "FAILED"
        if self.hold_metrics and status != "FINISHED":
            self._pending = []  # sent with the next checkpoint by the run that resumes, so never twice
        try:
            self.flush()
        finally:
            self.client.set_terminated(self.run_id, status=status)

    def _close_orphans(self) -> None:
        """Mark KILLED the runs of any stage left RUNNING by a process on this host that no longer exists."""
        host = socket.gethostname()
        for run in self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.status = 'RUNNING' and tags.`invaders.host` = '{host}'",
            max_results=1000,
        ):
            pid = run.data.tags.get("invaders.pid", "")
            if pid.isdigit() and not _pid_alive(int(pid)):
                self.client.set_terminated(run.info.run_id, status="KILLED")

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        if self.resume_run_id:
            # MLflow keeps a param's first value: a resumed run records new values (a longer
            # train.steps) as tags and logs only the params it does not have yet.
            logged = self.client.get_run(self.run_id).data.params
            self.set_tags(
                {
                    f"resumed.{key}": value
                    for key, value in params.items()
                    if key in logged and logged[key] != str(value)
                }
            )
            params = {key: value for key, value in params.items() if key not in logged}
        items = [Param(key, str(value)) for key, value in params.items()]
        for start in range(0, len(items), _BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=items[start : start + _BATCH_LIMIT])

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Queue metrics; they are sent in batches (one sqlite write costs ~7 ms)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._pending += [
            Metric(key, float(value), now, int(step)) for key, value in metrics.items() if math.isfinite(value)
        ]
        if not self.hold_metrics and (
            len(self._pending) >= _BATCH_LIMIT * 5 or time.monotonic() - self._last_flush > 30
        ):
            self.flush()

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_BATCH_LIMIT], self._pending[_BATCH_LIMIT:]
            self.client.log_batch(self.run_id, metrics=batch)
        self._last_flush = time.monotonic()

    def take_pending(self) -> list[list]:
        """The metrics not sent yet, as JSON-able ``[key, value, timestamp, step]`` rows; the queue empties."""
        pending, self._pending = self._pending, []
        return [[m.key, m.value, m.timestamp, m.step] for m in pending]

    def flush_checkpoint(self, checkpoint_id: str, rows: list[list], start: int = 0) -> None:
        """Send ``rows[start:]``; each batch carries a tag saying how far it got, so a resumed run re-sends
        only what is missing (see ``flushed_through``). MLflow's SQL stores commit a batch's metrics and
        tag separately; a batch whose tag was lost is re-sent whole, and the store drops the identical
        rows (a metric's key is its name, value, timestamp and step, all kept in the checkpoint)."""
        from mlflow.entities import Metric, RunTag

        for begin in range(start, len(rows), _BATCH_LIMIT):
            end = min(begin + _BATCH_LIMIT, len(rows))
            metrics = [Metric(key, value, timestamp, step) for key, value, timestamp, step in rows[begin:end]]
            marker = RunTag("invaders.metrics_flushed", f"{checkpoint_id}:{end}")
            self.client.log_batch(self.run_id, metrics=metrics, tags=[marker])
        if start >= len(rows):
            self.set_tags({"invaders.metrics_flushed": f"{checkpoint_id}:{len(rows)}"})

    def flushed_through(self, checkpoint_id: str) -> int:
        """How many of checkpoint ``checkpoint_id``'s metric rows already reached the store."""
        marker = self.client.get_run(self.run_id).data.tags.get("invaders.metrics_flushed", "")
        flushed_id, _, count = marker.rpartition(":")
        return int(count) if flushed_id == checkpoint_id else 0

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)


def stage_runs(experiment: str, stage: str) -> pd.DataFrame:
    """Every finished run of ``stage`` in ``experiment``: one row, with params/metrics/tags columns."""
    uri = tracking_uri()
    check_store(uri)
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame()
    rows = []
    for run in client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.status = 'FINISHED' and tags.`invaders.stage` = '{stage}'",
        max_results=5000,
        order_by=["attributes.start_time ASC"],
    ):
        row = {"run_id": run.info.run_id, "start_time": run.info.start_time}
        row.update({f"params.{k}": v for k, v in run.data.params.items()})
        row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
        row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def run_in_experiment(run_id: str, experiment: str) -> bool:
    """Whether ``run_id`` is a live run of ``experiment`` in this store (a resumed run continues it)."""
    from mlflow.exceptions import MlflowException

    uri = tracking_uri()
    check_store(uri)
    client = _client(uri)
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
        history = _client(tracking_uri()).get_metric_history(run_id, key)
    except MlflowException:
        history = []
    return pd.DataFrame({"step": [m.step for m in history], "value": [m.value for m in history]}).sort_values("step")


def download_artifact(run_id: str, path: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return Path(_client(tracking_uri()).download_artifacts(run_id, path, str(destination)))
