"""What the train stage does: train the built network with the backend named in params.

A resumable backend checkpoints every ``train.checkpoint_interval`` agent steps and on Ctrl-C; the same
command after a crash resumes from the newest checkpoint and continues the same run.
"""

from __future__ import annotations

import sys

from invaders import files
from invaders.agents.card import AgentCard
from invaders.backends import TrainingJob, can_resume, get_backend, recent_score
from invaders.config import Params, as_flat_dict
from invaders.hardware import cpu_description, learner_precision, update_path
from invaders.names import Metric, Tag
from invaders.pipeline import Step, Workspace
from invaders.resume import CheckpointWriter, fingerprint, resumable_run
from invaders.tracking.run import Run


def resumable_training(params: Params, workspace: Workspace) -> str | None:
    """The MLflow run of an interrupted training with these params that a checkpoint can continue."""
    from invaders.tracking.queries import run_in_experiment
    from invaders.tracking.store import displayed, tracking_uri

    weights = workspace.initial / "weights.npz"
    if not can_resume(params.train.backend) or not weights.is_file():
        return None
    run_id = resumable_run(workspace.checkpoints, fingerprint(params, weights), "train")
    if run_id and not run_in_experiment(run_id, params.tracking.experiment):
        print(
            f"train: the checkpoint's MLflow run {run_id} is not in experiment {params.tracking.experiment!r} "
            f"of {displayed(tracking_uri())}; starting fresh",
            file=sys.stderr,
        )
        return None
    return run_id


def train(params: Params, run: Run, workspace: Workspace) -> dict[str, float]:
    """Train the built network with the backend named in params; a resumable backend checkpoints every
    ``train.checkpoint_interval`` agent steps and on Ctrl-C, and continues from there when run again."""
    import pandas as pd

    from invaders.models.networks import save_weights
    from invaders.tracking.run_names import run_name, short_steps

    config = params.train
    run.log_params(
        {
            **as_flat_dict(config.applied(), "train"),
            **as_flat_dict(params.env, "env"),
            **as_flat_dict(params.model, "model"),
        }
    )
    # The native backend's arithmetic on this CPU (train.precision: auto resolves per CPU); None for keras-rl2.
    precision = learner_precision(config.precision) if "precision" in config.applied() else None
    tags = {
        Tag.BACKEND: config.backend,
        Tag.RUN_NAME: run_name(f"train {short_steps(config.steps)} seed {config.seed}"),
        Tag.CPU: cpu_description(),
    }
    run.set_tags(tags | ({Tag.PRECISION: precision, Tag.UPDATE_PATH: update_path(precision)} if precision else {}))
    checkpoints = None
    if can_resume(config.backend):
        current = fingerprint(params, workspace.initial / "weights.npz")
        checkpoints = CheckpointWriter(workspace.checkpoints, run, current, fresh=not run.resume_run_id)
    agent = get_backend(config.backend)(TrainingJob(params, workspace.initial, run.log_metrics, checkpoints))
    result = agent.result
    card = AgentCard(
        backend=config.backend,
        network=agent.spec.network,
        dueling=agent.spec.dueling,
        quantiles=agent.spec.quantiles or None,
        head=agent.spec.head,
        train_steps=result.steps,
        updates=result.updates,
        wall_time_s=round(result.wall_time_s, 1),
        train_run_id=run.run_id,
        precision=precision,
    )
    with files.atomic_directory(workspace.trained) as staging:
        save_weights(agent.model, agent.spec, staging)
        card.write(staging)
    metrics = {
        Metric.TOTAL_STEPS: result.steps,
        Metric.TOTAL_UPDATES: result.updates,
        Metric.TOTAL_GAMES: len(result.episode_returns),
        Metric.WALL_TIME_S: round(result.wall_time_s, 1),
        Metric.MEAN_STEPS_PER_SECOND: result.steps / max(result.wall_time_s, 1e-9),
        Metric.EVAL_WALL_TIME_S: round(result.eval_wall_time_s, 1),
    }
    if precision:  # in the metrics file, so `dvc exp show` lists the arithmetic each run trained in
        metrics |= {Metric.PRECISION: precision, Metric.UPDATE_PATH: update_path(precision)}
    if (score := recent_score(result.episode_returns)) is not None:
        metrics[Metric.GAME_SCORE_LAST20_MEAN] = score
    with files.atomic_path(workspace.train_results / "curve.csv") as temporary:
        pd.DataFrame(result.curve).to_csv(temporary, index=False)
    files.write_json(workspace.train_results / "metrics.json", metrics)
    run.log_metrics({key: value for key, value in metrics.items() if not isinstance(value, str)}, step=result.steps)
    run.log_artifact(workspace.trained, "model")
    run.log_artifact(workspace.train_results / "curve.csv")
    _register(card, params, run, workspace)
    run.flush()  # the held metrics reach the store before the checkpoint that also holds them goes
    if checkpoints and not checkpoints.fresh:  # an earlier run's checkpoints stay until this one wrote its own
        workspace.checkpoints.clear()
    return metrics


def _register(card: AgentCard, params: Params, run: Run, workspace: Workspace) -> None:
    """Log the agent, with the params it was trained with, as an MLflow model and register it as a new
    version (MLflow runs only)."""
    import dataclasses
    import hashlib
    import tempfile
    from pathlib import Path

    import yaml

    from invaders.tracking.registry import agent_tags, describe, log_agent, mlflow_run

    stored = mlflow_run(run)
    if stored is None:
        return
    weights_sha = hashlib.sha256((workspace.trained / "weights.npz").read_bytes()).hexdigest()
    with tempfile.TemporaryDirectory() as folder:
        trained_with = Path(folder) / "params.yaml"  # these params, overrides included (load_params reads it back)
        trained_with.write_text(yaml.safe_dump(dataclasses.asdict(params), sort_keys=False))
        version = log_agent(
            stored,
            workspace.trained,
            params.tracking.experiment,
            agent_tags(card, weights_sha),
            describe(card),
            trained_with,
        )
    run.set_tags({Tag.MODEL_VERSION: version})
    print(f"train: registered as {params.tracking.experiment} version {version}")


# Metrics of a resumable training leave with its checkpoints, so a resumed run logs each step once.
TRAIN = Step("train", train, resume=resumable_training, hold_metrics=lambda params: can_resume(params.train.backend))
