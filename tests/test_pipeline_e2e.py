"""The real pipeline: `dvc repro` and `dvc exp run -S` in a temporary copy of the repository, on tiny
settings, with the real emulator and a real MLflow sqlite store."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from invaders.tracking import mlflow_tracking as tracking

pytestmark = pytest.mark.e2e

TINY = {
    "env": {"max_episode_frames": 1_500},
    "evaluation": {"episodes": 2, "num_envs": 2, "gif_max_frames": 30},
    "train": {"steps": 600, "warmup_steps": 200, "replay_capacity": 4_000, "log_interval": 200, "num_envs": 2},
    "report": {"bootstrap_samples": 200},
}
STAGES = ["baseline", "build-model", "train", "evaluate", "report"]


def run(command: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git repository holding the project's files, with tiny params committed."""
    root = tmp_path_factory.mktemp("repo")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in files:
        source = REPO / name
        if source.is_file() and not name.startswith(("tests/", "results/", "report/", "models/")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    (root / "dvc.lock").unlink(missing_ok=True)
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in TINY.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = environment(root)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        run(command, root, env)
    return root


def environment(root: Path) -> dict:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env["PATH"] = f"{Path(os.sys.executable).parent}:{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    return env


def runs_of(root: Path, monkeypatch, stage: str):
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tracking.stage_runs("space-invaders-dqn", stage)


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
        "report/report.md",
        "report/report.html",
        "report/learning_curves.png",
    ]:
        assert (repo / path).is_file(), path
    metrics = json.loads((repo / "results/evaluate/metrics.json").read_text())
    assert metrics["episodes"] == 2 and metrics["score_min"] <= metrics["score_mean"] <= metrics["score_max"]
    assert json.loads((repo / "results/train/metrics.json").read_text())["steps"] >= 600
    report = (repo / "report/report.md").read_text()
    assert "random" in report and "native nature-dueling" in report
    assert (repo / "mlflow.db").is_file()

    for stage in STAGES:
        runs = runs_of(repo, monkeypatch, stage)
        assert len(runs) == 1, stage
        assert runs.iloc[0]["tags.dvc.exp_name"] == "workspace"
        assert runs.iloc[0]["tags.dvc.stage"] == stage
    train_run = runs_of(repo, monkeypatch, "train").iloc[0]
    assert len(tracking.metric_history(train_run["run_id"], "train/loss")) >= 2

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

    shown = run(["dvc", "exp", "show", "--json"], repo, env)
    assert '"longer"' in shown and "train.steps" in shown
