"""What an evaluation publishes: the protocol it played under, and its scores in files and in the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from invaders import files
from invaders.config import EvaluationConfig, Params, as_flat_dict, build_params
from invaders.evaluation.protocol import Episode
from invaders.evaluation.statistics import bootstrap_ci, summarize
from invaders.names import Metric, Tag


def protocol_params(params: Params) -> dict[str, object]:
    """The evaluation protocol as flat params: scores compare only under the same one."""
    evaluation = params.evaluation
    return {
        **as_flat_dict(params.env, "env"),
        "evaluation.episodes": evaluation.episodes,
        "evaluation.split": evaluation.split,
        "evaluation.first_seed": evaluation.first_seed(evaluation.split),
        "evaluation.num_envs": evaluation.num_envs,
    }


def games_label(evaluation: EvaluationConfig) -> str:
    """Which games an evaluation played, in words: ``test games 1000-1029``."""
    first = evaluation.first_seed(evaluation.split)
    return f"{evaluation.split} games {first}-{first + evaluation.episodes - 1}"


def protocol_label(params: Params, epsilon: float) -> str:
    """The protocol in words (tag ``Tag.PROTOCOL``): the report compares only agents with the same label."""
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
    return f"{emulator}, eps {epsilon:g}, whole games {cap}, unclipped score, {games_label(params.evaluation)}"


def default_protocol() -> str:
    """The protocol of the project's default settings (``EnvConfig`` and ``EvaluationConfig`` as documented):
    the one the model registry keeps versions' scores under."""
    return protocol_label(build_params({}), EvaluationConfig().epsilon)


# Beside metrics.json: what played (``agent``: label, training steps and time, weights' SHA-256, the
# experiment and commit that evaluated it) and under which protocol: the report's row, read from the file.
EVALUATED = "evaluated.json"


def publish_scores(
    episodes: list[Episode], directory: Path, run, params: Params, epsilon: float, agent: dict[str, object]
) -> dict[str, float]:
    """Write ``metrics.json``, ``episodes.csv`` and ``evaluated.json`` (``agent`` and the protocol) into
    ``directory`` and log the same numbers through ``run`` (the stage's tracking run)."""
    scores = np.array([episode.score for episode in episodes])
    stats = summarize(scores)
    low, high = bootstrap_ci(scores, params.report.confidence, params.report.bootstrap_samples, seed=0)
    summary = {
        Metric.SCORE_MEAN: stats["mean"],
        Metric.SCORE_STD: stats["std"],
        Metric.SCORE_MEDIAN: stats["median"],
        Metric.SCORE_MIN: stats["min"],
        Metric.SCORE_MAX: stats["max"],
        Metric.EPISODES: len(episodes),
        Metric.SCORE_CI_LOW: low,
        Metric.SCORE_CI_HIGH: high,
        Metric.STEPS_MEAN: float(np.mean([episode.steps for episode in episodes])),
    }
    table = pd.DataFrame(
        {
            "episode": np.arange(len(episodes)),
            "seed": [episode.seed for episode in episodes],
            Metric.GAME_SCORE: scores,
            "steps": [episode.steps for episode in episodes],
            "frames": [episode.frames for episode in episodes],
            "truncated": [episode.truncated for episode in episodes],
        }
    )
    protocol = protocol_label(params, epsilon)
    files.write_json(directory / "metrics.json", summary)
    files.write_json(directory / EVALUATED, {**agent, "protocol": protocol})
    with files.atomic_path(directory / "episodes.csv") as temporary:
        table.to_csv(temporary, index=False)
    run.set_tags({Tag.PROTOCOL: protocol})
    run.log_metrics(summary)
    for episode, score in enumerate(scores):
        run.log_metrics({Metric.GAME_SCORE: float(score)}, step=episode)
    run.log_artifact(directory / "metrics.json")
    run.log_artifact(directory / "episodes.csv")
    return summary


def score_line(agent: str, summary: dict[str, float]) -> str:
    """``agent: mean +- std over N games``, what a stage prints at its end."""
    return f"{agent}: {summary[Metric.SCORE_MEAN]:.1f} +- {summary[Metric.SCORE_STD]:.1f} over {summary[Metric.EPISODES]} games"
