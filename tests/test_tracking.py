"""The tracking module against a real sqlite MLflow store."""

import os

import pytest

from invaders.tracking import mlflow_tracking as tracking


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "unit-exp")
    return tmp_path


def test_store_defaults_to_sqlite_at_the_repo_root(store):
    assert tracking.tracking_uri() == f"sqlite:///{store / 'mlflow.db'}"


def test_stage_run_logs_params_metrics_artifacts_and_tags(store):
    artifact = store / "note.txt"
    artifact.write_text("hello")
    with tracking.StageRun("train", "unit") as run:
        run.log_params({"train.steps": 10})
        for step in range(250):
            run.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        run.log_artifact(artifact)
    runs = tracking.stage_runs("unit", "train")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["params.train.steps"] == "10"
    assert row["tags.dvc.exp_name"] == "unit-exp"
    assert row["tags.invaders.stage"] == "train"
    assert len(row["tags.mlflow.source.git.commit"]) > 0
    history = tracking.metric_history(row["run_id"], "train/loss")
    assert history["step"].tolist() == list(range(250))
    assert (store / "mlruns" / "unit").is_dir()
    client = tracking._client(tracking.tracking_uri())
    experiment = client.get_experiment_by_name("unit")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


@pytest.mark.parametrize(("error", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")])
def test_unfinished_stage_is_not_left_running(store, error, status):
    with pytest.raises(error):
        with tracking.StageRun("evaluate", "unit") as run:
            raise error()
    client = tracking._client(tracking.tracking_uri())
    assert client.get_run(run.run_id).info.status == status


def test_run_of_a_dead_process_is_marked_killed(store):
    stale = tracking.StageRun("train", "unit")
    stale.__enter__()
    client = stale.client
    client.set_tag(stale.run_id, "invaders.pid", str(2**22 + 12345))  # no such process
    with tracking.StageRun("train", "unit"):
        pass
    assert client.get_run(stale.run_id).info.status == "KILLED"
    assert os.getpid()  # the live process's own run finished normally
