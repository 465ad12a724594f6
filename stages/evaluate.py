"""Stage evaluate: an agent plays the evaluation protocol, exactly like the random baseline.

    python stages/evaluate.py                                   # the agent the train stage just made
    python stages/evaluate.py --agent shipped/NAME --output results/shipped/NAME   # a shipped agent

A shipped agent (weights, spec, agent.json, its training curve) was trained by this pipeline elsewhere;
its curve is logged with the evaluation, since its training run is in another MLflow store.
"""

import argparse
import dataclasses
import hashlib
from pathlib import Path

from invaders.agents.card import AgentCard
from invaders.config import load_params
from invaders.errors import ConfigError
from invaders.evaluation.publish import protocol_params, publish_scores, score_line
from invaders.names import Metric, Tag
from invaders.pipeline import run_stage

TRAINED = Path("models/trained")
OUTPUT = Path("results/evaluate")
SHIPPED_CURVE = "curve.csv"  # present only in shipped agents' folders


def evaluate(params, run, agent_dir: Path = TRAINED, output: Path = OUTPUT) -> None:
    from invaders.agents.policy import EpsilonGreedyPolicy, GreedyPolicy
    from invaders.envs.atari import make_vector_env, num_actions, observation_shape
    from invaders.evaluation.protocol import play_episodes
    from invaders.models.networks import check_fits, load_model
    from invaders.reporting.animation import write_gif

    evaluation = params.evaluation
    agent = AgentCard.read(agent_dir)
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
            **agent.as_params(),
        }
    )
    run.set_tags(
        {
            Tag.AGENT: agent.label,
            Tag.TRAIN_RUN_ID: agent.train_run_id,
            Tag.WEIGHTS_SHA256: weights_sha,
        }
    )
    if (agent_dir / SHIPPED_CURVE).is_file():
        log_shipped_curve(agent_dir / SHIPPED_CURVE, run)
    env = make_vector_env(params.env, min(evaluation.num_envs, evaluation.episodes))
    policy = EpsilonGreedyPolicy(GreedyPolicy(model), spec.num_actions, evaluation.epsilon, evaluation.seed)
    episodes, frames = play_episodes(env, policy, evaluation.episodes, evaluation.seed, evaluation.gif_max_frames)
    summary = publish_scores(episodes, output, run, params, evaluation.epsilon)
    run.log_metrics({Metric.AGENT_TRAIN_STEPS: agent.train_steps, Metric.AGENT_WALL_TIME_S: agent.wall_time_s})
    if frames:
        write_gif(frames, output / "episode.gif")
        run.log_artifact(output / "episode.gif")
    print(score_line(agent.label, summary))


def log_shipped_curve(path: Path, run) -> None:
    """The shipped agent's training curve, logged here so the report can draw it."""
    import pandas as pd

    curve = pd.read_csv(path).dropna(subset=[Metric.TRAIN_EPISODE_RETURN])
    for step, score in zip(curve["step"], curve[Metric.TRAIN_EPISODE_RETURN]):
        run.log_metrics({Metric.TRAIN_EPISODE_RETURN: float(score)}, step=int(step))
    run.set_tags({Tag.TRAIN_RUN_ID: run.run_id, Tag.SHIPPED: "true"})
    run.log_artifact(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Evaluate an agent under the project's protocol.")
    parser.add_argument("--agent", type=Path, default=TRAINED, help="folder with weights.npz, spec.json, agent.json")
    parser.add_argument(
        "--output", type=Path, default=OUTPUT, help="folder for metrics.json, episodes.csv, episode.gif"
    )
    arguments = parser.parse_args()
    run_stage("evaluate", lambda params, run: evaluate(params, run, arguments.agent, arguments.output))
