"""The training-metrics row both backends log every ``log_interval`` agent steps, under the same names."""

from __future__ import annotations

import math
import time

import numpy as np

from invaders.names import Metric


class IntervalStats:
    """Accumulates what happened since the last logged row."""

    def __init__(self, start_step: int = 0):
        self.reset(start_step)

    def reset(self, step: int) -> None:
        self.start_step, self.start_time = step, time.perf_counter()
        self.losses: list[float] = []
        self.q_means: list[float] = []
        self.returns: list[float] = []

    def row(self, step: int, episodes: int, updates: int, epsilon: float) -> dict[str, float]:
        """The row for agent step ``step``; starts the next interval. NaN where nothing happened."""
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        row = {
            Metric.TRAIN_STEPS_PER_SECOND: (step - self.start_step) / elapsed,
            Metric.TRAIN_EPSILON: epsilon,
            Metric.TRAIN_EPISODES: float(episodes),
            Metric.TRAIN_UPDATES: float(updates),
            Metric.TRAIN_LOSS: float(np.mean(self.losses)) if self.losses else math.nan,
            Metric.TRAIN_Q_MEAN: float(np.mean(self.q_means)) if self.q_means else math.nan,
            Metric.TRAIN_EPISODE_RETURN: float(np.mean(self.returns)) if self.returns else math.nan,
        }
        self.reset(step)
        return row
