"""One run seed, independent streams: every random source of a training run is spawned from ``train.seed``
through numpy's ``SeedSequence``, so two run seeds share no stream (not the initial weights, not one emulator)
and the same run seed gives the same run.

Evaluation is seeded by its game range instead (``EvaluationConfig``): game ``k`` of a range plays with
emulator seed ``first_seed + k`` whatever agent plays it, so two agents evaluated on one range play the same
games and their scores can be compared game by game (a paired test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Emulator seeds of training games are drawn at or above this; evaluation ranges stay below it, so no
# training game is ever an evaluation game.
TRAINING_EMULATOR_SEED_FLOOR = 2**24
_SEED_CEILING = 2**31 - 1  # ALE takes a signed 32-bit seed


@dataclass(frozen=True)
class RunSeeds:
    """The independent random streams of one training run."""

    weights: int  # the initial weights (build-model), a Keras seed
    learner: int  # TensorFlow's own op seeds while training, a Keras seed
    emulators: np.random.SeedSequence  # one child per start of the games: ``emulator_seeds``
    replay: np.random.SeedSequence  # which transitions each update samples
    exploration: np.random.SeedSequence  # the epsilon-greedy draws


def run_seeds(seed: int) -> RunSeeds:
    """The streams of run seed ``seed``: children of ``SeedSequence(seed)``, in a fixed order."""
    weights, learner, emulators, replay, exploration = np.random.SeedSequence(seed).spawn(5)
    return RunSeeds(
        weights=int(weights.generate_state(1)[0] >> 1),
        learner=int(learner.generate_state(1)[0] >> 1),
        emulators=emulators,
        replay=replay,
        exploration=exploration,
    )


def emulator_seeds(emulators: np.random.SeedSequence, num_envs: int, start: int) -> np.ndarray:
    """One emulator seed per game for the ``start``-th start of a run's games (0 first, then one per resume
    that could not keep its games), each in ``[TRAINING_EMULATOR_SEED_FLOOR, 2**31 - 1)``."""
    child = np.random.SeedSequence(emulators.entropy, spawn_key=(*emulators.spawn_key, start))
    span = _SEED_CEILING - TRAINING_EMULATOR_SEED_FLOOR
    return (TRAINING_EMULATOR_SEED_FLOOR + child.generate_state(num_envs, np.uint64) % span).astype(np.int64)


def game_seeds(first_seed: int, games: int) -> np.ndarray:
    """The emulator seeds of an evaluation range's games: game ``k`` plays with ``first_seed + k``."""
    return np.arange(first_seed, first_seed + games, dtype=np.int64)
