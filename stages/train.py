"""Stage train: train the built Q-network with the backend named in params."""

import json
from pathlib import Path

import pandas as pd

from invaders import io
from invaders.config import as_flat_dict
from invaders.models.networks import save_weights
from invaders.pipeline import run_stage

INITIAL = Path("models/initial")
OUTPUT = Path("models/trained")
RESULTS = Path("results/train")


def train(params, run) -> None:
    config = params.train
    run.log_params({**as_flat_dict(config, "train"), **as_flat_dict(params.env, "env"), **as_flat_dict(params.model, "model")})
    run.set_tags({"invaders.backend": config.backend})
    if config.backend == "native":
        from invaders.agents.native_backend import train_native

        model, spec, result = train_native(params, INITIAL, run.log_metrics)
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
        "steps": result.steps,
        "updates": result.updates,
        "episodes": len(result.episode_returns),
        "wall_time_s": round(result.wall_time_s, 1),
        "steps_per_second": result.steps / max(result.wall_time_s, 1e-9),
    }
    recent = result.episode_returns[-20:]
    if recent:
        metrics["game_score_last20_mean"] = sum(recent) / len(recent)
    with io.atomic_path(RESULTS / "curve.csv") as temporary:
        pd.DataFrame(result.curve).to_csv(temporary, index=False)
    io.write_json(RESULTS / "metrics.json", metrics)
    run.log_metrics({f"train/{key}": value for key, value in metrics.items()}, step=result.steps)
    run.log_artifact(OUTPUT, "model")
    run.log_artifact(RESULTS / "curve.csv")


if __name__ == "__main__":
    run_stage("train", train)
