"""The native backend: wire the environments, replay memory and learner together and train."""

from __future__ import annotations

from pathlib import Path

from invaders.agents.dqn import DQNLearner
from invaders.agents.training import MetricsCallback, train_dqn
from invaders.config import Params
from invaders.envs.atari import make_vector_env
from invaders.models.networks import build_q_network, load_model
from invaders.replay.frame_replay import FrameReplay


def train_native(params: Params, initial: Path, on_metrics: MetricsCallback, show_progress: bool = True):
    """Train the network saved in ``initial``; returns ``(model, spec, TrainingResult)``."""
    import keras

    config = params.train
    keras.utils.set_random_seed(config.seed)
    online, spec = load_model(initial)
    learner = DQNLearner(online, build_q_network(spec), config)
    env = make_vector_env(params.env, config.num_envs)
    replay = FrameReplay(
        config.replay_capacity,
        config.num_envs,
        spec.input_shape[1:],
        params.env.frame_stack,
        config.n_step,
        config.gamma,
    )
    result = train_dqn(env, learner, replay, config, on_metrics, show_progress)
    return online, spec, result
