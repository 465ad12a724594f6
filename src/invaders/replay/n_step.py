"""n-step returns of sampled transition windows, as the replay memory builds them (as SB3's
``NStepReplayBuffer`` and Dopamine's accumulator do): a pure function of rewards and episode ends."""

from __future__ import annotations

import numpy as np


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
