"""One sweep trial, run by Ray Tune on a worker: build-model, train and evaluate with the trial's overrides,
exactly the pipeline's steps, each in a stage run nested under the trial's MLflow run.

Tune gets a checkpoint after build-model, at every training checkpoint of the project (with the training
score, which ASHA judges) and after training. A trial whose worker dies restarts from the newest on another
worker: the workspace comes back from it, training resumes from the project's checkpoint in the same
train run, and the trial's MLflow run is found again by Tune's trial id. A trial restarted after its driver
died (``kill -9``, a closed session) is given the checkpoint the driver last recorded, which may be older
than the newest its trial persisted (docs/sweeps.md): it restores from the newest in its storage folder
instead, and from a newer training checkpoint a killed attempt left on the same node.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from invaders.backends import recent_score
from invaders.config import build_params, with_overrides
from invaders.names import Metric
from invaders.pipeline import Workspace, run_step
from invaders.steps.build_model import BUILD_MODEL
from invaders.steps.evaluate import EVALUATE
from invaders.steps.train import TRAIN

TRAIN_SCORE = "train_score"  # mean unclipped score of the last 20 training games (points), what ASHA compares
AGENT_STEPS = "agent_steps"  # agent steps trained when a result is reported: ASHA's clock
EVALUATED = "evaluated"  # 1 in a trial's last result when it trained and evaluated all its budget
_TRAINED = "trained.json"  # in a Tune checkpoint: training finished, only the evaluation is left
_HANDED_OVER = "handed_over.json"  # in a Tune checkpoint, written last: each file's size, to tell a complete copy


@dataclass(frozen=True)
class SweepContext:
    """What every trial of a sweep shares, handed to the workers by Ray."""

    parent_run_id: str  # the sweep's MLflow run
    raw_params: dict  # the parsed params.yaml the sweep started from (the workers need no copy of it)
    searched: tuple[str, ...]  # the keys that vary between trials, for the trial's name
    storage: str  # Tune's folder of the sweep: one folder per trial, holding its persisted checkpoints


def trial_name(overrides: dict[str, Any], searched: tuple[str, ...]) -> str:
    """``lr=0.0001 n_step=3 seed 2``: the varied params (by their last name) and the seed."""
    varied = " ".join(
        f"{key.rpartition('.')[2]}={f'{overrides[key]:.4g}' if isinstance(overrides[key], float) else overrides[key]}"
        for key in searched
    )
    return f"{varied} seed {overrides['train.seed']}".strip()


def _report(metrics: dict[str, float], folder: Path | None = None) -> None:
    from ray import tune

    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder) if folder else None)


def _link_tree(source: Path, target: Path) -> None:
    """``source``'s files hard-linked under ``target`` (a checkpoint costs no copy until Tune persists it)."""
    shutil.copytree(source, target, copy_function=os.link, dirs_exist_ok=True)


def _hand_over(workspace: Workspace, metrics: dict[str, float], training_checkpoint: Path | None = None) -> None:
    """Report ``metrics`` to Tune with a checkpoint of what the trial made so far in ``workspace``."""
    with tempfile.TemporaryDirectory(dir=workspace.root) as folder:
        staging = Path(folder)
        for made in (workspace.initial, workspace.trained, workspace.train_results):
            if made.is_dir():
                _link_tree(made, staging / made.relative_to(workspace.root))
        if training_checkpoint is not None:
            _link_tree(training_checkpoint, staging / training_checkpoint.relative_to(workspace.root))
        if workspace.trained.is_dir():
            (staging / _TRAINED).write_text("{}")
        (staging / _HANDED_OVER).write_text(json.dumps(_file_sizes(staging)))
        _report(metrics, staging)


def _file_sizes(folder: Path) -> dict[str, int]:
    return {
        str(path.relative_to(folder)): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file() and path.name != _HANDED_OVER
    }


def _complete(checkpoint: Path) -> bool:
    """Whether a persisted Tune checkpoint holds every file its trial handed over (a copy cut short does not)."""
    try:
        listed = json.loads((checkpoint / _HANDED_OVER).read_text())
    except (OSError, ValueError):
        return False
    return all(
        (checkpoint / name).is_file() and (checkpoint / name).stat().st_size == size for name, size in listed.items()
    )


def _training_steps(workspace_root: Path) -> int:
    """Agent steps of the newest training checkpoint under ``workspace_root``; -1 without one."""
    found = Workspace(workspace_root).checkpoints.latest_with_folder()
    return int(found[1]["checkpoint.steps"]) if found else -1


def _progress(checkpoint: Path) -> tuple[bool, int]:
    """How far the trial had got in a Tune checkpoint: trained, and its training checkpoint's agent steps."""
    return (checkpoint / _TRAINED).is_file(), _training_steps(checkpoint)


def _restore(root: Path, trial_folder: Path, left_behind: list[Path]) -> None:
    """Fill the new workspace ``root`` from the furthest complete Tune checkpoint of the trial, Tune's own or
    one in its storage ``trial_folder``; then take a newer training checkpoint from the workspaces a killed
    attempt left on this node (``left_behind``)."""
    from ray import tune

    given = tune.get_checkpoint()
    with given.as_directory() if given else contextlib.nullcontext() as folder:
        persisted = [Path(folder)] if folder else []
        persisted += [path for path in sorted(trial_folder.glob("checkpoint_*")) if _complete(path)]
        if persisted:
            shutil.copytree(max(persisted, key=_progress), root, dirs_exist_ok=True)
    trained, steps = _progress(root)
    newest = max(left_behind, key=_training_steps, default=None)
    if not trained and newest is not None and _training_steps(newest) > steps:
        folder, _ = Workspace(newest).checkpoints.latest_with_folder()
        print(
            f"trial: resuming from the newer training checkpoint {folder.name} a killed attempt left", file=sys.stderr
        )
        shutil.copytree(folder, Workspace(root).checkpoints.directory / folder.name)


def _training_score(checkpoint: Path) -> dict[str, float]:
    """What ASHA judges, read from a training checkpoint: its agent steps and recent training score."""
    steps = json.loads((checkpoint / "state.json").read_text())["trainer.steps"]
    score = recent_score(np.load(checkpoint / "trainer.episode_returns.npy"))
    return {AGENT_STEPS: steps, **({TRAIN_SCORE: float(score)} if score is not None else {})}


def run_trial(config: dict[str, Any], sweep: SweepContext) -> None:
    """Tune's trainable: ``config`` holds the trial's overrides (``train.seed`` among them)."""
    from ray import tune

    context = tune.get_context()
    overrides = dict(config)
    params = build_params(with_overrides(sweep.raw_params, overrides))
    # Not in the trial's folder, which Tune copies to its storage: the workspace reaches it only as checkpoints.
    prefix = f"invaders-trial-{context.get_trial_id()}-"
    left_behind = list(Path(tempfile.gettempdir()).glob(f"{prefix}*"))  # by killed attempts of this trial
    root = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        # The trial's folder in Tune's storage has the name of its local folder
        _restore(root, Path(sweep.storage) / Path(context.get_trial_dir()).name, left_behind)
        for stale in left_behind:
            shutil.rmtree(stale, ignore_errors=True)
        _run(root, params, overrides, sweep)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(root: Path, params, overrides: dict[str, Any], sweep: SweepContext) -> None:
    """The trial's steps in the workspace at ``root``, restored from the trial's checkpoints if it restarted."""
    import ray
    from ray import tune

    from invaders.tracking.sweep_runs import finish_trial_run, nested_stage_runs, open_trial_run

    context = tune.get_context()
    trained = (root / _TRAINED).is_file()

    trial_run_id = open_trial_run(
        params.tracking.experiment,
        sweep.parent_run_id,
        context.get_trial_id(),
        trial_name(overrides, sweep.searched),
        overrides,
        ray.util.get_node_ip_address(),
    )
    open_run = nested_stage_runs(trial_run_id)
    workspace = Workspace(root, on_checkpoint=lambda saved: _hand_over(workspace, _training_score(saved), saved))
    if not workspace.initial.is_dir():
        run_step(BUILD_MODEL, params, workspace, open_run)
        _hand_over(workspace, {AGENT_STEPS: 0})
    if not trained:
        run_step(TRAIN, params, workspace, open_run)
        _hand_over(workspace, {AGENT_STEPS: params.train.steps})
    summary = run_step(EVALUATE, params, workspace, open_run)
    finish_trial_run(trial_run_id, summary)
    keys = (Metric.SCORE_MEAN, Metric.SCORE_CI_LOW, Metric.SCORE_CI_HIGH, Metric.SCORE_MEDIAN)
    trained_metrics = json.loads((workspace.train_results / "metrics.json").read_text())
    final = {key: float(summary[key]) for key in keys}
    if Metric.GAME_SCORE_LAST20_MEAN in trained_metrics:  # the training score, as ASHA saw it
        final[TRAIN_SCORE] = trained_metrics[Metric.GAME_SCORE_LAST20_MEAN]
    _report({AGENT_STEPS: params.train.steps, EVALUATED: 1, **final})
