"""What every stage script shares: params, the MLflow run, one-line errors, and publishing scores."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from invaders import files
from invaders.config import Params, as_flat_dict, load_params
from invaders.errors import UserError
from invaders.evaluation.protocol import Episode
from invaders.evaluation.statistics import bootstrap_ci, summarize
from invaders.tracking.mlflow_tracking import StageRun

StageBody = Callable[[Params, StageRun], None]


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds like Ctrl-C, so the MLflow run is marked KILLED


def run_stage(
    stage: str,
    body: StageBody,
    params_path: str | Path = "params.yaml",
    resume: Callable[[Params], str | None] | None = None,
) -> None:
    """Validate params, open the stage's MLflow run, run ``body``; user mistakes exit 2 with one line.

    ``resume(params)`` may name the MLflow run of an interrupted earlier attempt to continue.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        params = load_params(params_path)
        resume_run_id = resume(params) if resume else None
        with StageRun(stage, params.tracking.experiment, resume_run_id) as run:
            body(params, run)
    except UserError as error:
        print(f"{stage}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"{stage}: interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def protocol_params(params: Params) -> dict[str, object]:
    """The evaluation protocol as flat params: scores compare only under the same one."""
    evaluation = params.evaluation
    return {
        **as_flat_dict(params.env, "env"),
        "evaluation.episodes": evaluation.episodes,
        "evaluation.seed": evaluation.seed,
        "evaluation.num_envs": evaluation.num_envs,
    }


def protocol_label(params: Params, epsilon: float) -> str:
    env = params.env
    if env.preprocessing == "raw":
        emulator = f"{env.id} raw frames, the id's own frame skip and sticky actions"
    else:
        emulator = (
            f"{env.id}, {env.screen_size}x{env.screen_size}x{env.frame_stack}, "
            f"sticky {env.repeat_action_probability:g}, frame skip {env.frame_skip}, "
            f"{f'up to {env.noop_max} no-op starts' if env.noop_max else 'no no-op starts'}"
        )
    cap = f"cut at {env.max_episode_frames:,} frames"
    return f"{emulator}, eps {epsilon:g}, whole games {cap}, unclipped score"


def publish_scores(
    episodes: list[Episode], directory: Path, run: StageRun, params: Params, epsilon: float
) -> dict[str, float]:
    """Write ``metrics.json`` and ``episodes.csv`` into ``directory`` and log the same numbers."""
    scores = np.array([episode.score for episode in episodes])
    summary = {f"score_{key}": value for key, value in summarize(scores).items() if key != "episodes"}
    summary["episodes"] = len(episodes)
    low, high = bootstrap_ci(scores, params.report.confidence, params.report.bootstrap_samples, seed=0)
    summary.update(score_ci_low=low, score_ci_high=high)
    summary["steps_mean"] = float(np.mean([episode.steps for episode in episodes]))
    table = pd.DataFrame(
        {
            "episode": np.arange(len(episodes)),
            "game_score": scores,
            "steps": [episode.steps for episode in episodes],
            "frames": [episode.frames for episode in episodes],
            "truncated": [episode.truncated for episode in episodes],
        }
    )
    files.write_json(directory / "metrics.json", summary)
    with files.atomic_path(directory / "episodes.csv") as temporary:
        table.to_csv(temporary, index=False)
    run.set_tags({"invaders.protocol": protocol_label(params, epsilon)})
    run.log_metrics(summary)
    for episode, score in enumerate(scores):
        run.log_metrics({"game_score": float(score)}, step=episode)
    run.log_artifact(directory / "metrics.json")
    run.log_artifact(directory / "episodes.csv")
    return summary
