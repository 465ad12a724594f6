"""The evaluation's games played again on the colour screen, to watch one.

A game the protocol plays is fixed by its emulator seed and the actions it was sent, whatever the observations
look like (``play_episodes`` starts each game with its own seed). ``ActionRecorder`` wraps the evaluation's
vector env and keeps, per game seed, the actions sent since that game started (a few bytes per step);
``replay_screen`` plays them again in an env that shows the screen, checking that the game scores what it
scored the first time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from invaders.evaluation.protocol import Episode


class ActionRecorder:
    """A vector env that remembers, for each game seed it was reset with, the actions that game was sent."""

    def __init__(self, env):
        self.env = env
        self.num_envs = env.num_envs
        self.actions: dict[int, list[int]] = {}  # game seed -> actions since its reset
        self._playing: list[list[int] | None] = [None] * self.num_envs

    def reset(self, seed: np.ndarray, options: dict | None = None):
        mask = (options or {}).get("reset_mask")
        envs = np.flatnonzero(mask) if mask is not None else range(self.num_envs)
        for env, game_seed in zip(envs, np.atleast_1d(seed), strict=True):
            # An environment replaying a seed already playing elsewhere (more envs than games) records aside.
            self._playing[env] = [] if int(game_seed) in self.actions else self.actions.setdefault(int(game_seed), [])
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: np.ndarray):
        for env, action in enumerate(np.asarray(actions)):
            self._playing[env].append(int(action))
        return self.env.step(actions)

    def __getattr__(self, name: str):  # anything else the protocol asks of the env
        return getattr(self.env, name)


def best_and_median(episodes: list[Episode]) -> dict[str, Episode]:
    """The best game and a median one (the lower middle of the scores), by name."""
    ranked = sorted(episodes, key=lambda episode: episode.score)
    return {"best": ranked[-1], "median": ranked[(len(ranked) - 1) // 2]}


def replay_screen(
    make_screen_env: Callable[[], object], recorder: ActionRecorder, episode: Episode, max_frames: int
) -> Iterator[tuple[np.ndarray, float]]:
    """The first ``max_frames`` colour frames of ``episode`` with the score so far, played again from its seed
    in the one-game env ``make_screen_env()`` makes (``make_vector_env(..., screen=True)``).

    Raises RuntimeError when the game played again does not score what it scored: then it is not the same game.
    """
    env = make_screen_env()
    observations, _ = env.reset(seed=np.array([episode.seed]))
    score = 0.0
    yield observations[0, -1], score
    frames = 1
    for action in recorder.actions[episode.seed][: episode.steps]:
        observations, rewards, *_ = env.step(np.array([action], dtype=np.int32))
        score += float(rewards[0])
        if frames < max_frames:
            yield observations[0, -1], score
            frames += 1
    env.close()
    if score != episode.score:
        raise RuntimeError(f"game of seed {episode.seed} played again scored {score}, not {episode.score}")
