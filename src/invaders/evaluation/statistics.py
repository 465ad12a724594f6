"""Summary statistics of game scores."""

from __future__ import annotations

import numpy as np


def summarize(scores: np.ndarray) -> dict[str, float]:
    """Mean, std (population), median, min, max and count of a set of game scores."""
    scores = np.asarray(scores, dtype=np.float64)
    return {
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "median": float(np.median(scores)),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "episodes": int(scores.size),
    }


def bootstrap_ci(scores: np.ndarray, confidence: float, samples: int, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean score."""
    scores = np.asarray(scores, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = rng.choice(scores, size=(samples, scores.size), replace=True).mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)
