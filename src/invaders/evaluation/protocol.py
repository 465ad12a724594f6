"""The evaluation protocol: whole games, unclipped game score, a fixed epsilon, fixed seeds.

Each of the parallel games plays the same share of the episodes, so short games are not
over-represented (taking the first N games to finish across environments would favour them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from invaders.progress import progress_bar

ActionChooser = Callable[[np.ndarray], np.ndarray]


@dataclass
class Episode:
    score: float  # unclipped game score of the whole game
    steps: int  # agent steps
    frames: int  # emulator frames
    truncated: bool  # stopped by the frame cap, not by game over


def episode_quotas(episodes: int, num_envs: int) -> np.ndarray:
    """Episodes each environment plays: as equal as possible, the first ones take the remainder."""
    quotas = np.full(num_envs, episodes // num_envs)
    quotas[: episodes % num_envs] += 1
    return quotas


def play_episodes(
    env,
    choose_actions: ActionChooser,
    episodes: int,
    seed: int,
    gif_max_frames: int = 0,
    show_progress: bool = True,
) -> tuple[list[Episode], list[np.ndarray]]:
    """Play ``episodes`` whole games; return them in order and the frames of the first game of env 0."""
    quotas = episode_quotas(episodes, env.num_envs)
    played = np.zeros(env.num_envs, dtype=int)
    observations, _ = env.reset(seed=seed)
    scores = np.zeros(env.num_envs)
    steps = np.zeros(env.num_envs, dtype=int)
    finals = np.zeros(env.num_envs, dtype=bool)
    results: list[Episode] = []
    gif_frames: list[np.ndarray] = []
    bar = progress_bar(episodes, "episodes", show_progress)
    bar.unit = "game"
    while len(results) < episodes:
        if played[0] == 0 and len(gif_frames) < gif_max_frames:
            gif_frames.append(observations[0, -1].copy())
        observations, rewards, terminated, truncated, info = env.step(choose_actions(observations))
        acted = ~finals
        scores += np.where(acted, rewards, 0)
        steps += acted
        ended = (terminated | truncated) & acted
        for game in np.flatnonzero(ended):
            if played[game] < quotas[game]:
                played[game] += 1
                results.append(
                    Episode(
                        float(scores[game]),
                        int(steps[game]),
                        int(info["episode_frame_number"][game]),
                        bool(truncated[game]),
                    )
                )
                bar.update(1)
                bar.set_postfix(score=f"{scores[game]:.0f}", refresh=False)
        scores[ended] = 0.0
        steps[ended] = 0
        finals = ended
    bar.close()
    return results, gif_frames
