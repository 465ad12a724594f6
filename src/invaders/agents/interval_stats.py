"""The training-metrics row both backends log every ``log_interval`` agent steps, under the same names."""

from __future__ import annotations

import math
import time

import numpy as np


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
            "train/steps_per_second": (step - self.start_step) / elapsed,
            "train/epsilon": epsilon,
            "train/episodes": float(episodes),
            "train/updates": float(updates),
            "train/loss": float(np.mean(self.losses)) if self.losses else math.nan,
            "train/q_mean": float(np.mean(self.q_means)) if self.q_means else math.nan,
            "train/episode_return": float(np.mean(self.returns)) if self.returns else math.nan,
        }
        self.reset(step)
        return row
