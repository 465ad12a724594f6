"""The harness every stage runs in: its workspace, params, its run, one-line errors.

A ``Step`` is what one stage does (its body, in ``invaders.steps``) and how its run is opened
(resumed? metrics held for checkpoints?). ``run_stage`` runs a step as a stage script under DVC;
``run_step`` runs it from Python with any ``OpenRun``, the MLflow one by default.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invaders.checkpoints import CheckpointStore
from invaders.config import Params, load_params
from invaders.errors import UserError
from invaders.resume import checkpoint_store
from invaders.tracking.run import Run

# (stage, params, resume_run_id, hold_metrics) -> a context manager yielding the stage's Run
OpenRun = Callable[[str, Params, "str | None", bool], AbstractContextManager[Run]]


@dataclass(frozen=True)
class Workspace:
    """Where the stages read and write under ``root``: the paths ``dvc.yaml`` declares."""

    root: Path = Path(".")
    on_checkpoint: Callable[[Path], None] | None = None  # told each new training checkpoint's folder

    @property
    def initial(self) -> Path:  # build-model's network, before training
        return self.root / "models/initial"

    @property
    def trained(self) -> Path:  # train's network and agent card
        return self.root / "models/trained"

    @property
    def build_metrics(self) -> Path:
        return self.root / "results/build-model/metrics.json"

    @property
    def baseline_results(self) -> Path:
        return self.root / "results/baseline"

    @property
    def train_results(self) -> Path:  # curve.csv, metrics.json
        return self.root / "results/train"

    @property
    def evaluation_results(self) -> Path:  # metrics.json, episodes.csv, best_game.mp4, median_game.mp4, episode.gif
        return self.root / "results/evaluate"

    @property
    def report(self) -> Path:  # report.md, report.html, plots
        return self.root / "report"

    @property
    def checkpoints(self) -> CheckpointStore:  # of the train stage, kept until a run completes
        return checkpoint_store(self.root, "train", self.on_checkpoint)


@dataclass(frozen=True)
class Step:
    stage: str  # the stage's name, as in dvc.yaml and the run's tags
    body: Callable[[Params, Run, Workspace], Any]
    resume: Callable[[Params, Workspace], str | None] | None = None  # the run of an interrupted attempt
    hold_metrics: Callable[[Params], bool] | None = None  # metrics leave with checkpoints (HeldMetrics)


def open_mlflow_run(stage: str, params: Params, resume_run_id: str | None, hold_metrics: bool):
    from invaders.tracking.stage_run import StageRun

    return StageRun(stage, params.tracking.experiment, resume_run_id, hold_metrics=hold_metrics)


def run_step(step: Step, params: Params, workspace: Workspace, open_run: OpenRun | None = None) -> Any:
    """Run ``step``'s body in its own run; returns what the body returns."""
    resume_run_id = step.resume(params, workspace) if step.resume else None
    hold = bool(step.hold_metrics and step.hold_metrics(params))
    with (open_run or open_mlflow_run)(step.stage, params, resume_run_id, hold) as run:
        return step.body(params, run, workspace)


@contextmanager
def exit_on_user_error(name: str) -> Iterator[None]:
    """A user mistake exits 2 with one line; Ctrl-C exits 130 with one line."""
    try:
        yield
    except UserError as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the MLflow run is marked KILLED


def run_stage(step: Step, params_path: str | Path = "params.yaml") -> None:
    """A stage script's whole body: validate params, run ``step`` in the workspace DVC runs it in."""
    signal.signal(signal.SIGTERM, _terminate)
    with exit_on_user_error(step.stage):
        run_step(step, load_params(params_path), Workspace())
