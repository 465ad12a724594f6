"""Reading the stages' runs back from the tracking store: a stage's finished runs as a table, a metric's
history, a run's artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from invaders.names import Tag, metric_column, param_column, tag_column
from invaders.tracking.store import check_store, client_for, tracking_uri


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
