"""The DQN math that needs no TensorFlow, as small pure functions: the epsilon schedule, exploration and the
quantile midpoints of QR-DQN.

The TensorFlow half (targets, loss) is in ``losses.py``; the n-step returns belong to the replay memory
(``replay/n_step.py``), which builds them when it samples."""

from __future__ import annotations

import numpy as np


def linear_epsilon(step: int, start: float, end: float, decay_steps: int) -> float:
    """Epsilon annealed linearly from ``start`` to ``end`` over ``decay_steps`` agent steps, then held."""
    fraction = min(max(step, 0) / decay_steps, 1.0)
    return start + fraction * (end - start)


def epsilon_greedy(
    greedy_actions: np.ndarray, epsilon: float, num_actions: int, rng: np.random.Generator
) -> np.ndarray:
    """Replace each greedy action by a uniformly random one with probability ``epsilon``."""
    explore = rng.random(greedy_actions.shape[0]) < epsilon
    random_actions = rng.integers(0, num_actions, greedy_actions.shape[0])
    return np.where(explore, random_actions, greedy_actions).astype(np.int32)


def quantile_midpoints(quantiles: int) -> np.ndarray:
    """QR-DQN's quantile levels tau_hat_i = (2i + 1) / 2N, i = 0..N-1: the midpoints of N equal probability
    bins, which the i-th output learns (Dabney et al. 2017, Lemma 2). float32, increasing."""
    return ((np.arange(quantiles, dtype=np.float64) + 0.5) / quantiles).astype(np.float32)
