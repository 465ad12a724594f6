"""Several training seeds as one result, by the method of Agarwal et al. 2021, "Deep reinforcement learning at
the edge of the statistical precipice" (NeurIPS; the ``rliable`` package), for one game.

A seed's score is its mean evaluation score. The seeds' scores are summarised by their interquartile mean
(IQM), robust to one lucky or unlucky seed, with a stratified bootstrap confidence interval: with one game
(one task) that resamples the seeds with replacement. Here and not in ``evaluation/``, which every evaluate
stage depends on: only the report uses it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean after cutting ``int(n / 4)`` scores at each end
    (``scipy.stats.trim_mean(scores, 0.25)``, rliable's ``aggregate_iqm``)."""
    return float(_sorted_iqms(np.sort(np.asarray(scores, dtype=np.float64))[np.newaxis])[0])


def _sorted_iqms(rows: np.ndarray) -> np.ndarray:
    """The IQM of each row of ``rows``, each row sorted."""
    cut = rows.shape[1] // 4
    return rows[:, cut : rows.shape[1] - cut].mean(axis=1)


def stratified_bootstrap_ci(
    seed_scores: np.ndarray, confidence: float, samples: int, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the IQM of ``seed_scores`` (one per training seed),
    resampling the seeds with replacement: rliable's stratified bootstrap with one task. One seed: the point."""
    scores = np.asarray(seed_scores, dtype=np.float64)
    resampled = np.random.default_rng(seed).choice(scores, size=(samples, scores.size), replace=True)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(_sorted_iqms(np.sort(resampled, axis=1)), [tail, 1.0 - tail])
    return float(low), float(high)


def curve_band(curves: list[pd.DataFrame], window: int) -> pd.DataFrame:
    """The seeds' learning curves (columns step, value, by step), each a rolling mean of ``window`` log
    intervals, on the steps all of them reach: columns step, mean, low and high (lowest and highest seed).
    Steps one seed did not log (no game ended in the interval) are interpolated from its neighbours."""
    smooth = [
        (curve["step"].to_numpy(), curve["value"].rolling(window, min_periods=1).mean().to_numpy()) for curve in curves
    ]
    steps = np.unique(np.concatenate([step for step, _ in smooth]))
    steps = steps[(steps >= max(step[0] for step, _ in smooth)) & (steps <= min(step[-1] for step, _ in smooth))]
    values = np.stack([np.interp(steps, step, value) for step, value in smooth])
    return pd.DataFrame(
        {"step": steps, "mean": values.mean(axis=0), "low": values.min(axis=0), "high": values.max(axis=0)}
    )
