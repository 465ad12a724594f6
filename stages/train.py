"""Stage train: train the built Q-network with the backend named in params.

The native backend checkpoints every ``train.checkpoint_interval`` agent steps and on Ctrl-C; the
same command after a crash resumes from the newest checkpoint and continues the same MLflow run.
"""

import sys
from pathlib import Path

import pandas as pd

from invaders import files
from invaders.agents.card import AgentCard
from invaders.config import as_flat_dict
from invaders.models.networks import save_weights
from invaders.names import Metric, Tag
from invaders.pipeline import run_stage
from invaders.resume import CheckpointWriter, checkpoint_store, fingerprint, resumable_run
from invaders.tracking.mlflow_tracking import project_root, run_in_experiment, tracking_uri
from invaders.tracking.run import HeldMetrics

INITIAL = Path("models/initial")
OUTPUT = Path("models/trained")
RESULTS = Path("results/train")


def resume(params) -> str | None:
    if params.train.backend != "native" or not (INITIAL / "weights.npz").is_file():
        return None
    run_id = resumable_run(
        checkpoint_store(project_root(), "train"), fingerprint(params, INITIAL / "weights.npz"), "train"
    )
    if run_id and not run_in_experiment(run_id, params.tracking.experiment):
        print(
            f"train: the checkpoint's MLflow run {run_id} is not in experiment {params.tracking.experiment!r} "
            f"of {tracking_uri()}; starting fresh",
            file=sys.stderr,
        )
        return None
    return run_id


def train(params, run) -> None:
    config = params.train
    # Native metrics go out with each checkpoint, so a resumed run logs each step once.
    run = HeldMetrics(run) if config.backend == "native" else run  # train() flushes it at its end
    run.log_params(
        {
            **as_flat_dict(config.applied(), "train"),
            **as_flat_dict(params.env, "env"),
            **as_flat_dict(params.model, "model"),
        }
    )
    run.set_tags({Tag.BACKEND: config.backend})
    store = checkpoint_store(project_root(), "train")
    if config.backend == "native":
        from invaders.agents.native_backend import build_trainer

        trainer, spec = build_trainer(params, INITIAL, run.log_metrics)
        writer = CheckpointWriter(store, run, fingerprint(params, INITIAL / "weights.npz"), fresh=not run.resume_run_id)
        if run.resume_run_id:
            writer.restore(trainer)
        result = trainer.run(writer, config.checkpoint_interval)
        model = trainer.learner.online
        owns_checkpoints = not writer.fresh
    else:
        from invaders.agents.kerasrl_backend import train_kerasrl

        model, spec, result = train_kerasrl(params, INITIAL, run.log_metrics)
        owns_checkpoints = False
    agent = AgentCard(
        backend=config.backend,
        network=spec.network,
        dueling=spec.dueling,
        train_steps=result.steps,
        updates=result.updates,
        wall_time_s=round(result.wall_time_s, 1),
        train_run_id=run.run_id,
    )
    with files.atomic_directory(OUTPUT) as staging:
        save_weights(model, spec, staging)
        agent.write(staging)
    metrics = {
        Metric.TOTAL_STEPS: result.steps,
        Metric.TOTAL_UPDATES: result.updates,
        Metric.TOTAL_GAMES: len(result.episode_returns),
        Metric.WALL_TIME_S: round(result.wall_time_s, 1),
        Metric.MEAN_STEPS_PER_SECOND: result.steps / max(result.wall_time_s, 1e-9),
    }
    recent = result.episode_returns[-20:]
    if recent:
        metrics[Metric.GAME_SCORE_LAST20_MEAN] = sum(recent) / len(recent)
    with files.atomic_path(RESULTS / "curve.csv") as temporary:
        pd.DataFrame(result.curve).to_csv(temporary, index=False)
    files.write_json(RESULTS / "metrics.json", metrics)
    run.log_metrics(metrics, step=result.steps)
    run.log_artifact(OUTPUT, "model")
    run.log_artifact(RESULTS / "curve.csv")
    run.flush()  # the held metrics reach the store before the checkpoint that also holds them goes
    if owns_checkpoints:  # an earlier run's checkpoints stay until this one has written its own
        store.clear()


if __name__ == "__main__":
    run_stage("train", train, resume=resume)
