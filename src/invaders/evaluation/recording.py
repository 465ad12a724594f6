"""The evaluation's games played again on the colour screen, to watch one.

The games an agent plays are fixed by each environment's seed and the actions it was sent, whatever the
observations look like. ``ActionRecorder`` wraps the evaluation's vector env and keeps both (a few bytes
per step); ``replay_screen`` plays one environment's actions again in an env that shows the screen, and
yields the frames of one of its games, checking that it scores what it scored the first time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from invaders.evaluation.protocol import episode_quotas


@dataclass(frozen=True)
class RecordedGame:
    env: int  # which of the parallel environments played it
    first_step: int  # vector step whose observation is its first frame; -1: the reset's
    last_step: int  # vector step that ended it
    score: float  # unclipped game score


class ActionRecorder:
    """A vector env that remembers the seeds it was reset with and, per step, the actions sent and which
    games ended (next-step autoreset, as ale-py's)."""

    def __init__(self, env):
        self.env = env
        self.num_envs = env.num_envs
        self.seeds: np.ndarray | None = None
        self.actions: list[np.ndarray] = []
        self.rewards: list[np.ndarray] = []
        self.ended: list[np.ndarray] = []

    def reset(self, seed: int | np.ndarray | None = None, **kwargs):
        if seed is not None:  # an int seeds game i with seed + i, as both vector envs do
            self.seeds = np.asarray(seed) if np.ndim(seed) else np.arange(seed, seed + self.num_envs)
        self.actions, self.rewards, self.ended = [], [], []
        return self.env.reset(seed=seed, **kwargs)

    def step(self, actions: np.ndarray):
        observations, rewards, terminated, truncated, info = self.env.step(actions)
        self.actions.append(np.array(actions))
        self.rewards.append(np.asarray(rewards, dtype=float))
        self.ended.append(np.asarray(terminated | truncated))
        return observations, rewards, terminated, truncated, info

    def games(self, episodes: int) -> list[RecordedGame]:
        """The games the protocol counted (``episodes`` shared as ``episode_quotas`` shares them), by env."""
        quotas = episode_quotas(episodes, self.num_envs)
        rewards, ended = np.array(self.rewards), np.array(self.ended)
        games = []
        for env in range(self.num_envs):
            first = -1
            for last in np.flatnonzero(ended[:, env])[: quotas[env]]:
                games.append(RecordedGame(env, first, int(last), float(rewards[first + 1 : last + 1, env].sum())))
                first = int(last) + 1  # the autoreset step: its observation is the next game's first frame
        return games

    def __getattr__(self, name: str):  # anything else the protocol asks of the env
        return getattr(self.env, name)


def best_and_median(games: list[RecordedGame]) -> dict[str, RecordedGame]:
    """The best game and a median one (the lower middle of the scores), by name."""
    ranked = sorted(games, key=lambda game: game.score)
    return {"best": ranked[-1], "median": ranked[(len(ranked) - 1) // 2]}


def replay_screen(
    make_screen_env: Callable[[], object], recorder: ActionRecorder, game: RecordedGame, max_frames: int
) -> Iterator[tuple[np.ndarray, float]]:
    """The first ``max_frames`` colour frames of ``game`` with the score so far, played again from its
    environment's seed in the one-game env ``make_screen_env()`` makes (``make_vector_env(..., screen=True)``).

    Raises RuntimeError when the game played again does not score what it scored: then it is not the same game.
    """
    env = make_screen_env()
    observations, _ = env.reset(seed=recorder.seeds[game.env : game.env + 1])
    frames, score = 0, 0.0
    if game.first_step < 0:
        yield observations[0, -1], score
        frames += 1
    for step in range(game.last_step + 1):
        observations, rewards, *_ = env.step(recorder.actions[step][game.env : game.env + 1])
        if step < game.first_step:
            continue
        score += float(rewards[0]) if step > game.first_step else 0.0
        if frames < max_frames:
            yield observations[0, -1], score
            frames += 1
    env.close()
    if score != game.score:
        raise RuntimeError(f"game of env {game.env} played again scored {score}, not {game.score}")
