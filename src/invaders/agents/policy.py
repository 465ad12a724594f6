"""Acting with a Q-network: one compiled forward pass for a whole batch of observations."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from invaders.agents.dqn_math import epsilon_greedy
from invaders.config import EnvConfig, EvaluationConfig
from invaders.evaluation.protocol import Episode, play_episodes


class GreedyPolicy:
    """Argmax-Q actions of ``model`` for a batch of uint8 observations."""

    def __init__(self, model, jit_compile: bool = True):
        self.model = model
        self._greedy = tf.function(self.actions_graph, jit_compile=jit_compile, reduce_retracing=True)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return self._greedy(tf.convert_to_tensor(observations)).numpy()

    def actions_graph(self, observations):
        """The argmax-Q actions as TensorFlow ops, to compile alone or inside another function."""
        q_values = self.model(tf.cast(observations, tf.float32), training=False)
        return tf.argmax(q_values, axis=1, output_type=tf.int32)


class EpsilonGreedyPolicy:
    """The evaluation policy: greedy, except a uniformly random action with probability ``epsilon``."""

    def __init__(self, greedy: GreedyPolicy, num_actions: int, epsilon: float, seed: int):
        self.greedy = greedy
        self.num_actions = num_actions
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        return epsilon_greedy(self.greedy(observations), self.epsilon, self.num_actions, self.rng)


def play_evaluation(
    greedy: GreedyPolicy,
    env_config: EnvConfig,
    evaluation: EvaluationConfig,
    split: str,
    episodes: int | None = None,
    show_progress: bool = True,
    env=None,
) -> list[Episode]:
    """The agent acting by ``greedy`` plays the evaluation protocol on the ``split`` games (test or validation): the first
    ``episodes`` of them (``evaluation.episodes`` by default) at ``evaluation.epsilon``. The epsilon draws are
    seeded by the range too, so the same agent on the same games plays the same way. ``env``: the vector env
    to play in (one of ``make_vector_env``'s, perhaps wrapped), else a new one, closed at the end."""
    from invaders.envs.atari import make_vector_env, num_actions

    episodes = episodes or evaluation.episodes
    first_seed = evaluation.first_seed(split)
    own_env = env is None
    env = make_vector_env(env_config, min(evaluation.num_envs, episodes)) if own_env else env
    policy = EpsilonGreedyPolicy(greedy, num_actions(env_config), evaluation.epsilon, first_seed)
    try:
        return play_episodes(env, policy, episodes, first_seed, show_progress)
    finally:
        if own_env:
            env.close()
