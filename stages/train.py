"""Stage train: train the built Q-network with the backend named in params.

The native backend checkpoints every ``train.checkpoint_interval`` agent steps and on Ctrl-C; the
same command after a crash resumes from the newest checkpoint and continues the same MLflow run.
"""

import json
from pathlib import Path

import pandas as pd

from invaders import io
from invaders.config import as_flat_dict
from invaders.models.networks import save_weights
from invaders.pipeline import run_stage
from invaders.resume import CheckpointWriter, checkpoint_store, fingerprint, resumable_run
from invaders.tracking.mlflow_tracking import project_root

INITIAL = Path("models/initial")
OUTPUT = Path("models/trained")
RESULTS = Path("results/train")


def resume(params) -> str | None:
    if params.train.backend != "native" or not (INITIAL / "weights.npz").is_file():
        return None
    return resumable_run(
        checkpoint_store(project_root(), "train"), fingerprint(params, INITIAL / "weights.npz"), "train"
    )


def train(params, run) -> None:
    config = params.train
    # Native metrics go out with each checkpoint, so a resumed run logs each step once.
    run.hold_metrics = config.backend == "native"
    run.log_params(
        {**as_flat_dict(config, "train"), **as_flat_dict(params.env, "env"), **as_flat_dict(params.model, "model")}
    )
    run.set_tags({"invaders.backend": config.backend})
    store = checkpoint_store(project_root(), "train")
    if config.backend == "native":
        from invaders.agents.native_backend import build_trainer

        trainer, spec = build_trainer(params, INITIAL, run.log_metrics)
        writer = CheckpointWriter(store, run, fingerprint(params, INITIAL / "weights.npz"))
        if run.resume_run_id:
            writer.restore(trainer)
        result = trainer.run(writer, config.checkpoint_interval)
        model = trainer.learner.online
    else:
        from invaders.agents.kerasrl_backend import train_kerasrl

        model, spec, result = train_kerasrl(params, INITIAL, run.log_metrics)
    agent = {
        "backend": config.backend,
        "network": spec.network,
        "dueling": spec.dueling,
        "train_steps": result.steps,
        "updates": result.updates,
        "wall_time_s": round(result.wall_time_s, 1),
        "train_run_id": run.run_id,
    }
    with io.atomic_directory(OUTPUT) as staging:
        save_weights(model, spec, staging)
        (staging / "agent.json").write_text(json.dumps(agent, indent=2) + "\n")
    metrics = {
        "total_steps": result.steps,
        "total_updates": result.updates,
        "total_games": len(result.episode_returns),
        "wall_time_s": round(result.wall_time_s, 1),
        "mean_steps_per_second": result.steps / max(result.wall_time_s, 1e-9),
    }
    recent = result.episode_returns[-20:]
    if recent:
        metrics["game_score_last20_mean"] = sum(recent) / len(recent)
    with io.atomic_path(RESULTS / "curve.csv") as temporary:
        pd.DataFrame(result.curve).to_csv(temporary, index=False)
    io.write_json(RESULTS / "metrics.json", metrics)
    run.log_metrics(metrics, step=result.steps)
    run.log_artifact(OUTPUT, "model")
    run.log_artifact(RESULTS / "curve.csv")
    store.clear()


if __name__ == "__main__":
    run_stage("train", train, resume=resume)
