"""The real pipeline: `dvc repro` and `dvc exp run -S` in a temporary copy of the repository, on tiny
settings, with the real emulator and a real MLflow sqlite store."""

import json
from pathlib import Path

import pandas as pd
import pytest
from repo_copy import TINY_SHIPPED, environment, make_repo, run

from invaders.hardware import cpu_description
from invaders.tracking.queries import metric_history, stage_runs

pytestmark = pytest.mark.e2e

SHIPPED = [f"evaluate-shipped@{name}" for name in TINY_SHIPPED["shipped"]]
STAGES = ["baseline", "build-model", "train", "evaluate", *SHIPPED, "report"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repository holding the project's files, with tiny params committed."""
    return make_repo(tmp_path_factory.mktemp("repo"))


def played_games(root: Path, dvc_stage: str) -> int:
    """Games a stage logs: the tiny params' 2, or, for a shipped agent whose weights are not in git, the games of
    the evaluation it brought (published from its record, under its own protocol)."""
    recorded = root / "shipped" / dvc_stage.partition("@")[2] / "evaluation_episodes.csv"
    return len(pd.read_csv(recorded)) if "@" in dvc_stage and recorded.is_file() else 2


def runs_of(root: Path, monkeypatch, dvc_stage: str):
    """The finished MLflow runs of one DVC stage (the two evaluate stages share the tag invaders.stage)."""
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = stage_runs("space-invaders-dqn", dvc_stage.split("-shipped")[0])
    return runs[runs["tags.dvc.stage"] == dvc_stage].reset_index(drop=True)


def test_repro_then_nothing_reruns_then_an_experiment(repo, monkeypatch):
    env = environment(repo)
    output = run(["dvc", "repro"], repo, env)
    for stage in STAGES:
        assert f"Running stage '{stage}'" in output
    for path in [
        "results/baseline/metrics.json",
        "results/baseline/episodes.csv",
        "models/initial/weights.npz",
        "models/trained/weights.npz",
        "results/train/curve.csv",
        "results/evaluate/episode.gif",
        "results/evaluate/best_game.mp4",
        "results/shipped/dqn-100k/metrics.json",
        "results/shipped/dqn-1m/metrics.json",
        "report/report.md",
        "report/report.html",
        "report/learning_curves.png",
        "report/best_game.mp4",  # evaluate's videos, beside the page that plays them
        "report/median_game.mp4",
    ]:
        assert (repo / path).is_file(), path
    metrics = json.loads((repo / "results/evaluate/metrics.json").read_text())
    assert metrics["episodes"] == 2 and metrics["score_min"] <= metrics["score_mean"] <= metrics["score_max"]
    assert json.loads((repo / "results/train/metrics.json").read_text())["total_steps"] >= 600
    # Reported scores are whole games in raw points: Space Invaders pays 5 to 200 per hit, never 1.
    scored = ["results/baseline", "results/evaluate", *(f"results/shipped/{name.split('@')[1]}" for name in SHIPPED)]
    for folder in scored:
        scores = pd.read_csv(repo / folder / "episodes.csv")["game_score"]
        assert (scores % 5 == 0).all(), (folder, scores.tolist())
        assert scores.max() > 0, folder
    report = (repo / "report/report.md").read_text()
    for agent in ["random", "native nature-dueling-streams 6", "100,000 steps", "1,000,001 steps", "x2 seeds"]:
        assert agent in report, agent
    assert (repo / "mlflow.db").is_file()

    for stage in STAGES:
        runs = runs_of(repo, monkeypatch, stage)
        assert len(runs) == 1, stage
        assert runs.iloc[0]["tags.dvc.exp_name"] == "workspace"
        assert runs.iloc[0]["tags.dvc.stage"] == stage
    train_run = runs_of(repo, monkeypatch, "train").iloc[0]
    assert len(metric_history(train_run["run_id"], "train/loss")) >= 2
    # What the speed and the arithmetic depend on: the resolved precision and the CPU that ran it.
    assert train_run["params.train.precision"] == "float32"
    assert train_run["tags.invaders.precision"] == "float32"
    assert train_run["tags.invaders.cpu"] == cpu_description()
    for stage in ["baseline", "evaluate", *SHIPPED]:
        logged = metric_history(runs_of(repo, monkeypatch, stage).iloc[0]["run_id"], "game_score")
        assert len(logged) == played_games(repo, stage) and (logged["value"] % 5 == 0).all(), stage
    assert (metric_history(train_run["run_id"], "train/game_score")["value"] % 5 == 0).all()

    again = run(["dvc", "repro"], repo, env)
    assert "Running stage" not in again
    assert len(runs_of(repo, monkeypatch, "train")) == 1

    run(["dvc", "exp", "run", "-n", "longer", "-S", "train.steps=800"], repo, env)
    assert len(runs_of(repo, monkeypatch, "baseline")) == 1, "baseline does not depend on train.steps"
    assert len(runs_of(repo, monkeypatch, "build-model")) == 1
    trains = runs_of(repo, monkeypatch, "train")
    assert trains["tags.dvc.exp_name"].tolist() == ["workspace", "longer"]
    assert trains.iloc[1]["params.train.steps"] == "800"
    evaluations = runs_of(repo, monkeypatch, "evaluate")
    assert evaluations["tags.dvc.exp_name"].tolist() == ["workspace", "longer"]
    for shipped in SHIPPED:
        assert len(runs_of(repo, monkeypatch, shipped)) == 1, "a shipped agent does not depend on train"

    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env))
    experiments = [exp for row in shown for exp in (row.get("experiments") or []) if exp.get("name") == "longer"]
    assert experiments, "dvc exp show lists the experiment"
    params = experiments[0]["revs"][0]["data"]["params"]["params.yaml"]["data"]
    assert params["train"]["steps"] == 800
