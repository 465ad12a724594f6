"""The harness every stage script runs in: params, the MLflow run, one-line errors."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

from invaders.config import Params, load_params
from invaders.errors import UserError
from invaders.tracking.mlflow_tracking import StageRun
from invaders.tracking.run import Run

StageBody = Callable[[Params, Run], None]


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the MLflow run is marked KILLED


def run_stage(
    stage: str,
    body: StageBody,
    params_path: str | Path = "params.yaml",
    resume: Callable[[Params], str | None] | None = None,
    hold_metrics: Callable[[Params], bool] | None = None,
) -> None:
    """Validate params, open the stage's MLflow run, run ``body``; user mistakes exit 2 with one line.

    ``resume(params)`` may name the MLflow run of an interrupted earlier attempt to continue.
    ``hold_metrics(params)`` true: the body gets its run inside ``HeldMetrics`` (metrics leave with its
    checkpoints, and at the end if it finishes).
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        params = load_params(params_path)
        resume_run_id = resume(params) if resume else None
        hold = bool(hold_metrics and hold_metrics(params))
        with StageRun(stage, params.tracking.experiment, resume_run_id, hold_metrics=hold) as run:
            body(params, run)
    except UserError as error:
        print(f"{stage}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{stage}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
