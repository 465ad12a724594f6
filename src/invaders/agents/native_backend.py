"""The native backend: wire the environments, replay memory and learner together and train."""

from __future__ import annotations

from pathlib import Path

from invaders.agents.dqn import DQNLearner
from invaders.agents.training import DQNTrainer, MetricsCallback
from invaders.config import Params
from invaders.envs.atari import make_vector_env, num_actions, observation_shape
from invaders.models.networks import NetworkSpec, build_q_network, check_fits, load_model
from invaders.replay.frame_replay import FrameReplay


def build_trainer(params: Params, initial: Path, on_metrics: MetricsCallback) -> tuple[DQNTrainer, NetworkSpec]:
    """The network saved in ``initial``, its learner, the environments and replay memory, wired together."""
    import keras

    config = params.train
    keras.utils.set_random_seed(config.seed)
    online, spec = load_model(initial)
    check_fits(spec, initial, observation_shape(params.env), num_actions(params.env))
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
    return DQNTrainer(env, learner, replay, config, on_metrics), spec
