"""The tracking store, the stage runs and the queries, against a real sqlite MLflow store."""

import pytest

from invaders.names import Metric, Tag
from invaders.tracking.queries import metric_history, stage_runs
from invaders.tracking.run import HeldMetrics, RecordingRun
from invaders.tracking.stage_run import StageRun
from invaders.tracking.store import client_for, displayed, tracking_uri


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "unit-exp")
    return tmp_path


def test_store_defaults_to_sqlite_at_the_repo_root(store):
    assert tracking_uri() == f"sqlite:///{store / 'mlflow.db'}"


def test_stage_run_logs_params_metrics_artifacts_and_tags(store):
    artifact = store / "note.txt"
    artifact.write_text("hello")
    with StageRun("train", "unit") as run:
        run.log_params({"train.steps": 10})
        for step in range(250):
            run.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        run.log_artifact(artifact)
    runs = stage_runs("unit", "train")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["params.train.steps"] == "10"
    assert row["tags.dvc.exp_name"] == "unit-exp"
    assert row["tags.invaders.stage"] == "train"
    assert len(row["tags.mlflow.source.git.commit"]) > 0
    history = metric_history(row["run_id"], "train/loss")
    assert history["step"].tolist() == list(range(250))
    assert (store / "mlruns" / "unit").is_dir()
    client = client_for(tracking_uri())
    experiment = client.get_experiment_by_name("unit")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize(("error", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_unfinished_stage_is_not_left_running(store, error, status):
    with pytest.raises(error):
        with StageRun("evaluate", "unit") as run:
            raise error()
    client = client_for(tracking_uri())
    assert client.get_run(run.run_id).info.status == status


def test_run_of_a_dead_process_is_marked_killed_and_a_live_ones_is_left_running(store):
    stale = StageRun("train", "unit")
    stale.__enter__()
    client = stale.client
    client.set_tag(stale.run_id, "invaders.pid", str(2**22 + 12345))  # no such process
    live = StageRun("evaluate", "unit")
    live.__enter__()  # tagged with this process's pid, which is alive
    with StageRun("train", "unit") as current:
        pass
    assert client.get_run(stale.run_id).info.status == "KILLED"
    assert client.get_run(live.run_id).info.status == "RUNNING"
    assert client.get_run(current.run_id).info.status == "FINISHED"
    live.__exit__(None, None, None)


def test_resumed_run_records_a_longer_budget_without_rewriting_params(store):
    with pytest.raises(KeyboardInterrupt):
        with StageRun("train", "unit") as first:
            first.log_params({"train.steps": 10})
            raise KeyboardInterrupt
    with StageRun("train", "unit", resume_run_id=first.run_id) as resumed:
        resumed.log_params({"train.steps": 20, "train.seed": 0})
    run = resumed.client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"train.steps": "10", "train.seed": "0"}
    assert run.data.tags["resumed.train.steps"] == "20"


def test_held_metrics_of_a_failed_run_are_not_sent(store):
    with pytest.raises(RuntimeError):
        with StageRun("train", "unit", hold_metrics=True) as run:
            run.log_metrics({"train/loss": 1.0}, step=5)
            raise RuntimeError
    assert metric_history(run.run_id, "train/loss").empty


def test_held_metrics_of_a_finished_run_are_sent_once(store):
    with StageRun("train", "unit", hold_metrics=True) as run:
        run.log_metrics({Metric.TRAIN_LOSS: 1.0, Metric.TRAIN_Q_MEAN: float("nan")}, step=5)
    assert metric_history(run.run_id, Metric.TRAIN_LOSS)["step"].tolist() == [5]
    assert metric_history(run.run_id, Metric.TRAIN_Q_MEAN).empty, "values that are not finite are left out"


def test_a_checkpoint_sends_what_it_holds_and_a_resumed_run_only_what_never_arrived():
    stored = RecordingRun()
    held = HeldMetrics(stored)
    for step in range(250):
        held.log_metrics({Metric.TRAIN_LOSS: float(step)}, step=step)
    rows = held.take_pending()
    assert len(rows) == 250 and held.take_pending() == [] and stored.rows == []
    held.flush_checkpoint("250", rows[:150])  # killed after the first two writes
    assert held.flushed_through("250") == 150 and held.flushed_through("100") == 0
    assert stored.tags[Tag.METRICS_FLUSHED] == "250:150"

    resumed = HeldMetrics(stored)
    resumed.flush_checkpoint("250", rows, start=resumed.flushed_through("250"))
    assert [step for step, _ in stored.history(Metric.TRAIN_LOSS)] == list(range(250))
    resumed.flush_checkpoint("250", rows, start=250)
    assert stored.tags[Tag.METRICS_FLUSHED] == "250:250" and len(stored.rows) == 250


def test_a_login_written_into_the_tracking_uri_is_never_printed():
    assert displayed("http://alice:s3cret@127.0.0.1:5050/") == "http://127.0.0.1:5050/"
    assert displayed("sqlite:////repo/mlflow.db") == "sqlite:////repo/mlflow.db"
