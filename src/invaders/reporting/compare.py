"""Compare every evaluation in an MLflow store, not only the pipeline's: ``invaders compare``.

The report stage reads its DVC deps (``gather``); this command reads every finished baseline and evaluate
run of the experiment (all of them, page by page), the latest evaluation of each agent under each protocol,
and writes the same report into a folder of its own (default ``comparison/``, git-ignored).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
from pathlib import Path

import pandas as pd

from invaders import files
from invaders.config import load_params
from invaders.errors import UserError
from invaders.names import Metric, Tag, metric_column, tag_column
from invaders.reporting.report import AgentScores, game_title, seed_rows, write_report
from invaders.shipping import AGENTS_LIST, seed_groups
from invaders.tracking.queries import download_artifact, metric_history, stage_runs

PROTOCOL = tag_column(Tag.PROTOCOL)
WEIGHTS = tag_column(Tag.WEIGHTS_SHA256)
TRAIN_STEPS = metric_column(Metric.AGENT_TRAIN_STEPS)
SOURCE = "Every evaluated agent in the MLflow experiment, latest evaluation of each, beside the random agent."


def latest(runs: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """The newest run of each distinct ``columns`` combination (runs arrive oldest first)."""
    return runs.drop_duplicates(subset=list(columns), keep="last") if not runs.empty else runs


def gather_runs(experiment: str, random_protocol: str) -> list[AgentScores]:
    """Random agents first, the one under ``random_protocol`` leading, then every evaluated agent."""
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


def compare(output: Path, params_path: Path = Path("params.yaml")) -> str:
    """Write the comparison of every evaluation in the experiment of ``params_path`` into ``output``."""
    from invaders.evaluation.publish import protocol_label

    params = load_params(params_path)
    agents = gather_runs(params.tracking.experiment, protocol_label(params, epsilon=1.0))
    if not agents:
        raise UserError(f"experiment {params.tracking.experiment!r} holds no finished baseline or evaluate run")
    protocol = protocol_label(params, params.evaluation.epsilon)
    comparable = [agent for agent in agents if agent.train_steps > 0 and agent.protocol == protocol]
    best = max(comparable, key=lambda agent: agent.scores.mean()) if comparable else None
    groups = {
        group.label: frozenset(_weights_sha256(Path(AGENTS_LIST.parent, name)) for name in group.members)
        for group in seed_groups()
    }
    with files.atomic_directory(output) as staging, tempfile.TemporaryDirectory() as downloads:
        gif = None
        if best is not None:
            gif = staging / "best_agent.gif"
            gif.write_bytes(download_artifact(best.run_id, "episode.gif", Path(downloads)).read_bytes())
        return write_report(
            seed_rows(agents, groups),
            staging,
            params.report.confidence,
            params.report.bootstrap_samples,
            best,
            gif,
            game=game_title(params.env.id),
            source=SOURCE,
        )


def _weights_sha256(agent_dir: Path) -> str:
    """How the evaluation of the agent in ``agent_dir`` is tagged (``Tag.WEIGHTS_SHA256``)."""
    return hashlib.sha256((agent_dir / "weights.npz").read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compare every evaluation in the MLflow experiment.")
    parser.add_argument("--output", type=Path, default=Path("comparison"), help="folder for the report")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="experiment, protocol, report")
    arguments = parser.parse_args(argv)
    try:
        print(compare(arguments.output, arguments.params))
    except UserError as error:
        print(f"compare: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
