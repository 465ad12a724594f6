"""The report's agents, read from the files the evaluation stages wrote (the report stage's DVC deps).

Each evaluation folder (``results/baseline``, ``results/evaluate``, ``results/shipped/<name>``) holds
``evaluated.json`` (the agent and the protocol it played), ``episodes.csv`` (one row per game) and, for
a trained agent, ``episode.gif``; its training curve is the train stage's ``curve.csv`` or the one shipped
beside the agent. The videos of the best and the median game are the evaluate stage's outputs in
``results/evaluate``; a shipped agent's are declared by no stage (``.dvcignore``), so the report never reads
them. Nothing here reads the tracking store, so the same files give the same report anywhere.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from invaders.errors import InputError
from invaders.evaluation.publish import EVALUATED
from invaders.names import Metric
from invaders.reporting.report import AgentScores, WatchedGames

BASELINE = Path("results/baseline")
EVALUATE = Path("results/evaluate")
TRAIN_CURVE = Path("results/train/curve.csv")
SHIPPED_RESULTS = Path("results/shipped")  # one folder per shipped agent (evaluate-shipped@NAME)
SHIPPED_AGENTS = Path("shipped")  # the agents themselves, each with the curve.csv of its training
GIF = "episode.gif"  # the names reporting.animation.write_watched_games writes (tests/test_watch.py)
BEST_GAME = "best_game.mp4"
MEDIAN_GAME = "median_game.mp4"


@dataclass(frozen=True)
class Evaluation:
    """One evaluation stage's output folder and the agent it scored."""

    folder: Path
    agent: AgentScores

    @property
    def gif(self) -> Path | None:
        """The first evaluation game as a GIF, if the stage drew one."""
        path = self.folder / GIF
        return path if path.is_file() else None

    @property
    def videos(self) -> tuple[Path, Path] | None:
        """The best and the median game as videos, if the stage wrote both."""
        paths = self.folder / BEST_GAME, self.folder / MEDIAN_GAME
        return paths if all(path.is_file() for path in paths) else None


def copy_watched_games(evaluation: Evaluation, directory: Path) -> WatchedGames | None:
    """The videos of ``evaluation`` (the evaluate stage's, a dep of the report) copied into ``directory``, the
    report's folder, so that its page plays them from there; None if it has none."""
    if evaluation.videos is None:
        return None
    best, median = (Path(shutil.copyfile(video, directory / video.name)) for video in evaluation.videos)
    return WatchedGames(evaluation.agent, best, median)


def read_curve(path: Path) -> pd.DataFrame | None:
    """A training curve (``curve.csv``) as the report plots it: columns step, value (the mean training game
    score, NaN where no game ended) and the evaluations while training where the run made them; None if none."""
    if not path.is_file():
        return None
    curve = pd.read_csv(path)
    if Metric.TRAIN_EPISODE_RETURN not in curve:
        return None
    evaluated = [Metric.EVAL_SCORE_MEAN, Metric.EVAL_SCORE_CI_LOW, Metric.EVAL_SCORE_CI_HIGH]
    kept = ["step", Metric.TRAIN_EPISODE_RETURN, *(column for column in evaluated if column in curve)]
    curve = curve[kept].dropna(subset=[Metric.TRAIN_EPISODE_RETURN, *kept[2:]], how="all")
    return curve.rename(columns={Metric.TRAIN_EPISODE_RETURN: "value"}).reset_index(drop=True)


def read_evaluation(folder: Path, curve: Path | None = None) -> Evaluation:
    """The agent an evaluation stage wrote into ``folder``; a missing or unreadable file is one line."""
    try:
        about = json.loads((folder / EVALUATED).read_text())
        scores = pd.read_csv(folder / "episodes.csv")[Metric.GAME_SCORE].to_numpy(dtype=float)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{folder}: not a complete evaluation ({error}); rerun it: dvc repro") from None
    agent = AgentScores(
        label=about["agent"],
        train_steps=int(about["train_steps"]),
        train_wall_time_s=float(about["train_wall_time_s"]),
        protocol=about["protocol"],
        experiment=about["experiment"],
        commit=about["commit"],
        scores=scores,
        curve=read_curve(curve) if curve else None,
        weights_sha256=about.get("weights_sha256", ""),
    )
    return Evaluation(folder, agent)


def gather_evaluations(root: Path, shipped: list[str]) -> list[Evaluation]:
    """The random agent first, then the pipeline's trained agent and each of ``shipped`` by training steps;
    an agent evaluated twice under one protocol (same weights) counts once."""
    random = read_evaluation(root / BASELINE)
    trained = [read_evaluation(root / EVALUATE, root / TRAIN_CURVE)] + [
        read_evaluation(root / SHIPPED_RESULTS / name, root / SHIPPED_AGENTS / name / "curve.csv") for name in shipped
    ]
    distinct = {}
    for evaluation in trained:
        distinct.setdefault((evaluation.agent.weights_sha256, evaluation.agent.protocol), evaluation)
    return [random, *sorted(distinct.values(), key=lambda evaluation: evaluation.agent.train_steps)]
