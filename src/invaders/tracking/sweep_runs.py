"""The MLflow runs of a sweep: one parent run, one run per trial nested under it, the trial's stage runs
(build-model, train, evaluate) nested under the trial's.

Ray kills a trial's process when Tune stops it early or its worker dies, leaving its runs RUNNING: the
driver closes them (``close_trials``). A trial restarted from a checkpoint finds its run again by Tune's
trial id, so every trial is one run whatever happened to its workers.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

from invaders.names import Metric, Tag
from invaders.repository import git_commit
from invaders.tracking.stage_run import StageRun
from invaders.tracking.store import client_for, open_experiment, server_errors, tracking_uri

SWEEP_STAGE = "sweep"
TRIAL_STAGE = "trial"


def _now_ms() -> int:
    return int(time.time() * 1000)


def open_sweep_run(experiment: str, name: str, sweep_file: Path, root: Path, resume_run_id: str | None) -> str:
    """The sweep's parent run: created with the sweep file as artifact, or ``resume_run_id`` set RUNNING again."""
    uri = tracking_uri(root)
    client = client_for(uri)
    with server_errors(uri):
        experiment_id = open_experiment(uri, experiment, root)
        if resume_run_id:
            client.update_run(resume_run_id, status="RUNNING")
            return resume_run_id
        tags = {
            Tag.STAGE: SWEEP_STAGE,
            Tag.SWEEP: name,
            Tag.GIT_COMMIT: git_commit(root),
            Tag.SOURCE_NAME: str(sweep_file),
            Tag.HOST: socket.gethostname(),
        }
        run_id = client.create_run(experiment_id, tags=tags, run_name=f"sweep {name}").info.run_id
        client.log_artifact(run_id, str(sweep_file))
        return run_id


def open_trial_run(
    experiment: str, parent_run_id: str, trial_id: str, name: str, params: dict[str, Any], node: str
) -> str:
    """The run of trial ``trial_id`` under the sweep's: created on its first attempt, set RUNNING again on the
    next (on Ray node ``node``)."""
    uri = tracking_uri()
    client = client_for(uri)
    with server_errors(uri):
        experiment_id = open_experiment(uri, experiment)
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{Tag.PARENT_RUN_ID}` = '{parent_run_id}' and tags.`{Tag.TRIAL_ID}` = '{trial_id}'",
        )
        if found:
            run = found[0]
            attempts = int(run.data.tags.get(Tag.TRIAL_ATTEMPTS, "1")) + 1
            client.update_run(run.info.run_id, status="RUNNING")
            client.set_tag(run.info.run_id, Tag.TRIAL_ATTEMPTS, str(attempts))
            client.set_tag(
                run.info.run_id, Tag.TRIAL_NODE, f"{run.data.tags.get(Tag.TRIAL_NODE, '')},{node}".lstrip(",")
            )
            return run.info.run_id
        tags = {
            Tag.PARENT_RUN_ID: parent_run_id,
            Tag.STAGE: TRIAL_STAGE,
            Tag.TRIAL_ID: trial_id,
            Tag.TRIAL_NODE: node,
            Tag.TRIAL_ATTEMPTS: "1",
            Tag.GIT_COMMIT: os.environ.get("DVC_EXP_BASELINE_REV", "unknown"),
        }
        run_id = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        from mlflow.entities import Param

        client.log_batch(run_id, params=[Param(key, str(value)) for key, value in params.items()])
        return run_id


def nested_stage_runs(parent_run_id: str):
    """An ``OpenRun`` for ``invaders.pipeline.run_step``: each stage's run nested under ``parent_run_id``."""

    def open_run(stage, params, resume_run_id, hold_metrics):
        return StageRun(stage, params.tracking.experiment, resume_run_id, hold_metrics, parent_run_id=parent_run_id)

    return open_run


def finish_trial_run(run_id: str, summary: dict[str, float]) -> None:
    """Log a finished trial's evaluation summary on its run and mark it FINISHED."""
    from mlflow.entities import Metric as MlflowMetric

    uri = tracking_uri()
    client = client_for(uri)
    keys = (Metric.SCORE_MEAN, Metric.SCORE_CI_LOW, Metric.SCORE_CI_HIGH, Metric.SCORE_MEDIAN, Metric.EPISODES)
    with server_errors(uri):
        client.log_batch(run_id, metrics=[MlflowMetric(key, float(summary[key]), _now_ms(), 0) for key in keys])
        client.set_terminated(run_id, status="FINISHED")


def close_trials(parent_run_id: str, stopped: set[str], others: str, sweep_status: str | None = None) -> None:
    """Close what Ray's killed processes left RUNNING under the sweep, once no trial process runs: trials whose
    Tune id is in ``stopped`` (stopped early by ASHA) FINISHED and tagged so, the others ``others``; any stage
    run still RUNNING (of any trial: a restarted one's dead attempt too) KILLED. With ``sweep_status`` the
    sweep's run ends too."""
    uri = tracking_uri()
    client = client_for(uri)
    with server_errors(uri):
        experiment_id = client.get_run(parent_run_id).info.experiment_id
        for trial in client.search_runs(
            [experiment_id], filter_string=f"tags.`{Tag.PARENT_RUN_ID}` = '{parent_run_id}'"
        ):
            for stage_run in client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{Tag.PARENT_RUN_ID}` = '{trial.info.run_id}' and attributes.status = 'RUNNING'",
            ):
                client.set_terminated(stage_run.info.run_id, status="KILLED")
            if trial.info.status != "RUNNING":
                continue
            early = trial.data.tags.get(Tag.TRIAL_ID) in stopped
            if early:
                client.set_tag(trial.info.run_id, Tag.STOPPED_EARLY, "true")
            client.set_terminated(trial.info.run_id, status="FINISHED" if early else others)
        if sweep_status:
            client.set_terminated(parent_run_id, status=sweep_status)


def log_sweep_outcome(parent_run_id: str, table: Path, best: dict[str, float]) -> None:
    """The trials table as an artifact of the sweep's run, the best configuration's figures as its metrics."""
    from mlflow.entities import Metric as MlflowMetric

    uri = tracking_uri()
    client = client_for(uri)
    with server_errors(uri):
        client.log_artifact(parent_run_id, str(table))
        client.log_batch(parent_run_id, metrics=[MlflowMetric(key, value, _now_ms(), 0) for key, value in best.items()])
