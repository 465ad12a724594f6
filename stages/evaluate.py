"""Stage evaluate: an agent plays the evaluation protocol, exactly like the random baseline.

    python stages/evaluate.py                                   # the agent the train stage just made
    python stages/evaluate.py --agent shipped/NAME --output results/shipped/NAME   # a shipped agent

A shipped agent (weights, spec, agent.json, its training curve) was trained by this pipeline elsewhere;
its curve is logged with the evaluation, since its training run is in another MLflow store.
"""

import argparse
import dataclasses
import hashlib
import json
from pathlib import Path

from invaders.config import load_params
from invaders.errors import ConfigError, InputError
from invaders.pipeline import protocol_params, publish_scores, run_stage

TRAINED = Path("models/trained")
OUTPUT = Path("results/evaluate")
SHIPPED_CURVE = "curve.csv"  # present only in shipped agents' folders


def read_agent(directory: Path) -> dict:
    path = directory / "agent.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing; run the train stage first (dvc repro)") from None
    except ValueError:
        raise InputError(f"{path}: not valid JSON; rerun the train stage (dvc repro -f train)") from None


def agent_label(agent: dict) -> str:
    head = "-dueling" if agent["dueling"] else ""
    return f"{agent['backend']} {agent['network']}{head} {agent['train_steps']:,} steps"


def evaluate(params, run, agent_dir: Path = TRAINED, output: Path = OUTPUT) -> None:
    from invaders.agents.policy import EpsilonGreedyPolicy, GreedyPolicy
    from invaders.envs.atari import make_vector_env, num_actions, observation_shape
    from invaders.evaluation.protocol import play_episodes
    from invaders.models.networks import check_fits, load_model
    from invaders.reporting.animation import write_gif

    evaluation = params.evaluation
    agent = read_agent(agent_dir)
    model, spec = load_model(agent_dir)
    if (agent_dir / "params.yaml").is_file():
        # A shipped agent plays the game it was trained on; the evaluation settings are this run's.
        try:
            shipped_env = load_params(agent_dir / "params.yaml").env
        except ConfigError as error:
            message = str(error)  # say which params file: not the project's own
            where = "" if message.startswith(str(agent_dir)) else f"{agent_dir}/params.yaml: "
            raise ConfigError(where + message) from None
        params = dataclasses.replace(params, env=shipped_env)
    check_fits(spec, agent_dir, observation_shape(params.env), num_actions(params.env))
    weights_sha = hashlib.sha256((agent_dir / "weights.npz").read_bytes()).hexdigest()
    run.log_params(
        {
            **protocol_params(params),
            "evaluation.epsilon": evaluation.epsilon,
            **{f"agent.{key}": value for key, value in agent.items()},
        }
    )
    run.set_tags(
        {
            "invaders.agent": agent_label(agent),
            "invaders.train_run_id": agent["train_run_id"],
            "invaders.weights_sha256": weights_sha,
        }
    )
    if (agent_dir / SHIPPED_CURVE).is_file():
        log_shipped_curve(agent_dir / SHIPPED_CURVE, run)
    env = make_vector_env(params.env, min(evaluation.num_envs, evaluation.episodes))
    policy = EpsilonGreedyPolicy(GreedyPolicy(model), spec.num_actions, evaluation.epsilon, evaluation.seed)
    episodes, frames = play_episodes(env, policy, evaluation.episodes, evaluation.seed, evaluation.gif_max_frames)
    summary = publish_scores(episodes, output, run, params, evaluation.epsilon)
    run.log_metrics({"agent.train_steps": agent["train_steps"], "agent.wall_time_s": agent["wall_time_s"]})
    if frames:
        write_gif(frames, output / "episode.gif")
        run.log_artifact(output / "episode.gif")
    print(
        f"{agent_label(agent)}: {summary['score_mean']:.1f} +- {summary['score_std']:.1f} over {summary['episodes']} games"
    )


def log_shipped_curve(path: Path, run) -> None:
    """The shipped agent's training curve, logged here so the report can draw it."""
    import pandas as pd

    curve = pd.read_csv(path).dropna(subset=["train/episode_return"])
    for step, score in zip(curve["step"], curve["train/episode_return"]):
        run.log_metrics({"train/episode_return": float(score)}, step=int(step))
    run.set_tags({"invaders.train_run_id": run.run_id, "invaders.shipped": "true"})
    run.log_artifact(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Evaluate an agent under the project's protocol.")
    parser.add_argument("--agent", type=Path, default=TRAINED, help="folder with weights.npz, spec.json, agent.json")
    parser.add_argument(
        "--output", type=Path, default=OUTPUT, help="folder for metrics.json, episodes.csv, episode.gif"
    )
    arguments = parser.parse_args()
    run_stage("evaluate", lambda params, run: evaluate(params, run, arguments.agent, arguments.output))
