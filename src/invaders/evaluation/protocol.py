"""The evaluation protocol: whole games, unclipped game score, a fixed epsilon, seeded games.

Game ``k`` of an evaluation starts its emulator with seed ``first_seed + k`` (``invaders.seeding.game_seeds``),
whichever of the parallel environments plays it, and the games come back in that order. So every agent
evaluated on one seed range plays the same games, game by game: the basis of the paired champion test.
Exactly ``episodes`` games are started and each is played to its end, so short games are not over-represented.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from invaders.progress import progress_bar
from invaders.seeding import game_seeds

ActionChooser = Callable[[np.ndarray], np.ndarray]


@dataclass
class Episode:
    score: float  # unclipped game score of the whole game
    steps: int  # agent steps
    frames: int  # emulator frames
    truncated: bool  # stopped by the frame cap, not by game over
    seed: int = -1  # the emulator seed the game started from (-1: a recorded game that did not say)


def play_episodes(
    env,
    choose_actions: ActionChooser,
    episodes: int,
    first_seed: int,
    show_progress: bool = True,
) -> list[Episode]:
    """Play games ``first_seed``, ``first_seed + 1``, ... (``episodes`` of them) to their ends; return them in
    seed order."""
    seeds = game_seeds(first_seed, episodes)
    starting = min(env.num_envs, episodes)
    # Environments beyond the games asked for replay one of them, never counted (game -1).
    game_of = np.concatenate([np.arange(starting), np.full(env.num_envs - starting, -1)])
    observations, _ = env.reset(seed=seeds[np.arange(env.num_envs) % episodes])
    next_game = starting
    scores = np.zeros(env.num_envs)
    steps = np.zeros(env.num_envs, dtype=int)
    results: dict[int, Episode] = {}
    bar = progress_bar(episodes, "episodes", show_progress)
    bar.unit = "game"
    while len(results) < episodes:
        observations, rewards, terminated, truncated, info = env.step(choose_actions(observations))
        scores += rewards
        steps += 1
        ended = terminated | truncated
        for game_env in np.flatnonzero(ended & (game_of >= 0)):
            results[int(game_of[game_env])] = Episode(
                float(scores[game_env]),
                int(steps[game_env]),
                int(info["episode_frame_number"][game_env]),
                bool(truncated[game_env]),
                int(seeds[game_of[game_env]]),
            )
            bar.update(1)
            bar.set_postfix(score=f"{scores[game_env]:.0f}", refresh=False)
            game_of[game_env] = next_game if next_game < episodes else -1
            next_game += 1
        if ended.any() and len(results) < episodes:
            # Start the next games now, each with its own seed; the others are untouched (no autoreset step).
            restart = ended & (game_of >= 0)
            if restart.any():
                observations, _ = env.reset(seed=seeds[game_of[restart]], options={"reset_mask": restart})
        scores[ended] = 0.0
        steps[ended] = 0
    bar.close()
    return [results[game] for game in range(episodes)]
