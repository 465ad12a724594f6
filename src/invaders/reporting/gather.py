"""The report's agents, read back from the MLflow runs of the baseline and evaluate stages."""

from __future__ import annotations

import pandas as pd

from invaders.names import Metric, Tag, metric_column, tag_column
from invaders.reporting.report import AgentScores
from invaders.tracking.mlflow_tracking import metric_history, stage_runs

PROTOCOL = tag_column(Tag.PROTOCOL)
WEIGHTS = tag_column(Tag.WEIGHTS_SHA256)
TRAIN_STEPS = metric_column(Metric.AGENT_TRAIN_STEPS)


def latest(runs: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """The newest run of each distinct ``columns`` combination (runs arrive oldest first)."""
    return runs.drop_duplicates(subset=list(columns), keep="last") if not runs.empty else runs


def gather_agents(experiment: str, random_protocol: str) -> list[AgentScores]:
    """Random agents first, the one under ``random_protocol`` (this run's) leading, then every evaluated agent."""
    baselines = latest(stage_runs(experiment, "baseline"), PROTOCOL)
    if not baselines.empty:
        baselines = baselines.sort_values(PROTOCOL, key=lambda column: column != random_protocol, kind="stable")
    evaluations = latest(stage_runs(experiment, "evaluate"), WEIGHTS, PROTOCOL)
    if not evaluations.empty:
        evaluations = evaluations.sort_values(TRAIN_STEPS, kind="stable")
    randoms = [_scores(run, label="random", train_steps=0, train_wall_time_s=0.0) for _, run in baselines.iterrows()]
    trained = [
        _scores(
            run,
            label=run[tag_column(Tag.AGENT)],
            train_steps=int(run[TRAIN_STEPS]),
            train_wall_time_s=float(run[metric_column(Metric.AGENT_WALL_TIME_S)]),
            curve=metric_history(run[tag_column(Tag.TRAIN_RUN_ID)], Metric.TRAIN_EPISODE_RETURN),
            run_id=run["run_id"],
            weights_sha256=run[WEIGHTS],
        )
        for _, run in evaluations.iterrows()
    ]
    return randoms + trained


def _scores(run: pd.Series, **agent) -> AgentScores:
    """``run``'s evaluation games, under the protocol, experiment and commit it was tagged with."""
    return AgentScores(
        protocol=run[PROTOCOL],
        experiment=run[tag_column(Tag.DVC_EXP_NAME)],
        commit=run[tag_column(Tag.GIT_COMMIT)],
        scores=metric_history(run["run_id"], Metric.GAME_SCORE)["value"].to_numpy(),
        **agent,
    )
