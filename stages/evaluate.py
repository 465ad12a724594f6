"""Stage evaluate: the trained agent plays the evaluation protocol, exactly like the random baseline."""

import hashlib
import json
from pathlib import Path

from invaders.config import ConfigError
from invaders.pipeline import protocol_params, publish_scores, run_stage

TRAINED = Path("models/trained")
OUTPUT = Path("results/evaluate")


def read_agent(directory: Path) -> dict:
    path = directory / "agent.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing; run the train stage first (dvc repro)") from None
    except ValueError:
        raise ConfigError(f"{path}: not valid JSON; rerun the train stage (dvc repro -f train)") from None


def agent_label(agent: dict) -> str:
    head = "-dueling" if agent["dueling"] else ""
    return f"{agent['backend']} {agent['network']}{head} {agent['train_steps']:,} steps"


def evaluate(params, run) -> None:
    from invaders.agents.policy import EpsilonGreedyPolicy, GreedyPolicy
    from invaders.envs.atari import make_vector_env
    from invaders.evaluation.protocol import play_episodes
    from invaders.models.networks import load_model
    from invaders.reporting.animation import write_gif

    evaluation = params.evaluation
    agent = read_agent(TRAINED)
    model, spec = load_model(TRAINED)
    weights_sha = hashlib.sha256((TRAINED / "weights.npz").read_bytes()).hexdigest()
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
    env = make_vector_env(params.env, min(evaluation.num_envs, evaluation.episodes))
    policy = EpsilonGreedyPolicy(GreedyPolicy(model), spec.num_actions, evaluation.epsilon, evaluation.seed)
    episodes, frames = play_episodes(env, policy, evaluation.episodes, evaluation.seed, evaluation.gif_max_frames)
    summary = publish_scores(episodes, OUTPUT, run, params, evaluation.epsilon)
    run.log_metrics({"agent.train_steps": agent["train_steps"], "agent.wall_time_s": agent["wall_time_s"]})
    if frames:
        write_gif(frames, OUTPUT / "episode.gif")
        run.log_artifact(OUTPUT / "episode.gif")
    print(
        f"{agent_label(agent)}: {summary['score_mean']:.1f} +- {summary['score_std']:.1f} over {summary['episodes']} games"
    )


if __name__ == "__main__":
    run_stage("evaluate", evaluate)
