"""One stage run is one MLflow run: ``MlflowRun`` sends to it, ``StageRun`` opens and closes it.

The stage logs to the ``Run`` that ``StageRun`` yields (see ``invaders.tracking.run``); the run is tagged with
the stage, the git commit and the DVC experiment, in the store of ``invaders.tracking.store``.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from invaders.names import Tag
from invaders.repository import project_root, provenance
from invaders.tracking.run import HeldMetrics, MetricRow, Run, metric_rows
from invaders.tracking.run_names import run_name
from invaders.tracking.store import (
    check_store,
    client_for,
    open_experiment,
    server_errors,
    server_problem,
    tracking_uri,
)

_BATCH_LIMIT = 100  # params and metrics per log_batch call, below MLflow's limits


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class MlflowRun:
    """A ``StoredRun`` that sends to one MLflow run. Metrics are queued and sent in batches (each write to the
    store has a cost of its own: docs/speed.md), at the latest by ``flush``."""

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
        for start in range(0, len(items), _BATCH_LIMIT):  # one request per batch, not per tag
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
