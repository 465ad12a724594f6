"""The pipeline's steps called from Python (what a sweep trial runs): build-model, train and evaluate with
params overrides, on the real emulator, each step in its own run."""

import re
from contextlib import contextmanager

import pytest
from conftest import REPO
from repo_copy import TINY

from invaders.errors import ConfigError
from invaders.experiment import params_with, train_and_evaluate
from invaders.names import Metric, Tag
from invaders.pipeline import Workspace
from invaders.tracking.run import HeldMetrics, RecordingRun

OVERRIDES = {f"{section}.{key}": value for section, values in TINY.items() for key, value in values.items()}


def recording_runs():
    """Each stage's run, recorded in memory, and the ``open_run`` of train_and_evaluate that makes them."""
    runs: dict[str, RecordingRun] = {}

    @contextmanager
    def open_run(stage, params, resume_run_id, hold_metrics):
        runs[stage] = RecordingRun(stage, resume_run_id)
        yield HeldMetrics(runs[stage]) if hold_metrics else runs[stage]
        runs[stage].flush()

    return runs, open_run


def test_train_and_evaluate_runs_each_stage_in_its_own_run(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "from-python")  # the checkpoints' folder
    runs, open_run = recording_runs()

    workspace = Workspace(tmp_path)
    summary = train_and_evaluate(
        {**OVERRIDES, "train.steps": 500, "train.seed": 3, "train.checkpoint_interval": 200},
        workspace,
        REPO / "params.yaml",
        open_run,
    )
    assert list(runs) == ["build-model", "train", "evaluate"]
    assert (workspace.trained / "weights.npz").is_file() and (workspace.train_results / "curve.csv").is_file()
    assert runs["train"].params["train.steps"] == "500" and runs["train"].params["train.seed"] == "3"
    assert runs["train"].history(Metric.TRAIN_UPDATES), "training metrics reach the run"
    assert runs["evaluate"].tags[Tag.TRAIN_RUN_ID] == "train"
    assert summary[Metric.EPISODES] == 2
    scores = [value for _, value in runs["evaluate"].history(Metric.GAME_SCORE)]
    assert len(scores) == 2 and all(score % 5 == 0 for score in scores)
    assert not (tmp_path / "checkpoints" / "from-python" / "train").exists(), "a finished run clears its checkpoints"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"train.stepz": 5}, "train.stepz: unknown key; did you mean train.steps?"),
        ({"train.steps": "many"}, "train.steps = 'many': must be a whole number"),
        ({"steps": 5}, "steps: not a params key (use section.key, e.g. train.steps)"),
    ],
)
def test_bad_overrides_are_one_line_before_any_work(overrides, message):
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        params_with(overrides, REPO / "params.yaml")


def test_a_qr_dqn_agent_builds_trains_evaluates_and_says_so_in_its_card(tmp_path, monkeypatch):
    """model.quantiles reaches the network build-model saves, the learner train runs, the card and the
    evaluation, which plays the trained agent by its quantiles' mean."""
    import json

    from invaders.agents.card import AgentCard
    from invaders.models.networks import load_spec

    monkeypatch.setenv("DVC_EXP_NAME", "qr-from-python")
    runs, open_run = recording_runs()

    workspace = Workspace(tmp_path)
    overrides = {**OVERRIDES, "train.steps": 400, "model.quantiles": 8}
    summary = train_and_evaluate(overrides, workspace, REPO / "params.yaml", open_run)
    assert load_spec(workspace.initial).quantiles == 8 and load_spec(workspace.trained).quantiles == 8
    assert json.loads((workspace.trained / "spec.json").read_text())["head"] == "dueling-streams"
    card = AgentCard.read(workspace.trained)
    assert card.quantiles == 8 and card.label.startswith("native nature-dueling-streams-qr8 ")
    assert runs["build-model"].params["model.quantiles"] == "8"
    losses = [value for _, value in runs["train"].history(Metric.TRAIN_LOSS)]
    assert losses and all(value == value for value in losses), "quantile losses reach the run"
    assert summary[Metric.EPISODES] == 2
