"""The DQN math as small pure functions: schedules, n-step returns, targets and loss."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """Epsilon annealed linearly from ``start`` to ``end`` over ``decay_steps`` agent steps, then held."""
    fraction = min(max(step, 0) / decay_steps, 1.0)
    return start + fraction * (end - start)


def n_step_returns(
    rewards: np.ndarray, terminals: np.ndarray, next_is_final: np.ndarray, gamma: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Discounted n-step returns of a batch of transition windows.

    Row ``b`` holds the ``n`` transitions that follow a sampled state: ``rewards[b, k]``, whether
    transition ``k`` ended in a terminal state (``terminals``), and whether the observation after it
    is the last one of its episode (``next_is_final``: a time-limit truncation if not terminal).
    Accumulation stops at the first terminal (no bootstrap) or truncation (bootstrap from the final
    observation, which is a real state and not a death).

    Returns ``(returns, bootstrap_discount, bootstrap_offset)``: the target is
    ``returns + bootstrap_discount * Q(state at offset)``, with ``offset`` in ``1..n``.
    """
    batch, n = rewards.shape
    returns = np.zeros(batch, dtype=np.float32)
    discount = np.zeros(batch, dtype=np.float32)
    offset = np.full(batch, n, dtype=np.int64)
    running = np.ones(batch, dtype=bool)
    for k in range(n):
        returns += np.where(running, gamma**k * rewards[:, k], 0.0).astype(np.float32)
        stops_terminal = running & terminals[:, k]
        stops_truncated = running & ~terminals[:, k] & next_is_final[:, k]
        offset[stops_terminal | stops_truncated] = k + 1
        discount[stops_truncated] = gamma ** (k + 1)
        running &= ~(stops_terminal | stops_truncated)
    discount[running] = gamma**n
    return returns, discount, offset


def bootstrap_values(next_q_online: tf.Tensor, next_q_target: tf.Tensor, double_dqn: bool) -> tf.Tensor:
    """Value of the bootstrap state: Double DQN evaluates the online argmax with the target net."""
    if not double_dqn:
        return tf.reduce_max(next_q_target, axis=1)
    best = tf.argmax(next_q_online, axis=1, output_type=tf.int32)
    return tf.gather(next_q_target, best, axis=1, batch_dims=1)


def td_targets(returns: tf.Tensor, discounts: tf.Tensor, next_values: tf.Tensor) -> tf.Tensor:
    """``r + gamma^k * V(s')``, without gradient."""
    return tf.stop_gradient(returns + discounts * next_values)


def huber_loss(errors: tf.Tensor, delta: float = 1.0) -> tf.Tensor:
    """Mean Huber loss: quadratic within ``delta`` of zero, linear beyond (the 2015 DQN error clipping)."""
    absolute = tf.abs(errors)
    quadratic = tf.minimum(absolute, delta)
    return tf.reduce_mean(0.5 * tf.square(quadratic) + delta * (absolute - quadratic))


def epsilon_greedy(
    greedy_actions: np.ndarray, epsilon: float, num_actions: int, rng: np.random.Generator
) -> np.ndarray:
    """Replace each greedy action by a uniformly random one with probability ``epsilon``."""
    explore = rng.random(greedy_actions.shape[0]) < epsilon
    random_actions = rng.integers(0, num_actions, greedy_actions.shape[0])
    return np.where(explore, random_actions, greedy_actions).astype(np.int32)
