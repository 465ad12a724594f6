"""Raw-frame environments (``env.preprocessing: raw``): the id's own 210x160 RGB frames, as the notebook used.

The agent sees a window of the last ``RAW_WINDOW`` frames, zero-padded at the start of a game, exactly
like keras-rl2's ``SequentialMemory(window_length=3)`` builds its states during training. The emulator
settings (frame skip, sticky actions) are the id's own; only the frame cap comes from ``EnvConfig``.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import FrameStackObservation

from invaders.config import EnvConfig

# Frames per observation; envs/atari.py's observation_shape says (3, 210, 160, 3) for raw frames.
RAW_WINDOW = 3


def make_raw_env(config: EnvConfig):
    """One gymnasium env of ``config.id`` giving single raw RGB frames (210, 160, 3) uint8."""
    import ale_py

    gymnasium.register_envs(ale_py)
    return gymnasium.make(config.id, max_num_frames_per_episode=config.max_episode_frames)


def make_raw_vector_env(config: EnvConfig, num_envs: int):
    """``num_envs`` raw-frame games stepped together, with the interface of ale-py's ``AtariVectorEnv``.

    ``reset`` takes seeds as ``AtariVectorEnv`` does (see ``RawVectorEnv``). Observations are ``(num_envs, 3, 210, 160, 3)`` uint8:
    the last 3 frames, oldest first, zeros before the first frame of a game. Autoreset is next-step:
    after a step that ends a game, the next step ignores its action and returns the first observation
    of a new game with reward 0. ``info`` holds ``lives`` and ``episode_frame_number`` arrays.
    """

    def make_one():
        return FrameStackObservation(make_raw_env(config), stack_size=RAW_WINDOW, padding_type="zero")

    return RawVectorEnv([make_one for _ in range(num_envs)], autoreset_mode=AutoresetMode.NEXT_STEP)


class RawVectorEnv(SyncVectorEnv):
    """gymnasium's ``SyncVectorEnv`` with ale-py's reset seeds: an int seeds game i with ``seed + i``, an
    array gives one seed per game being reset (the games ``options["reset_mask"]`` selects, else all)."""

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, np.ndarray):
            mask = (options or {}).get("reset_mask")
            chosen = np.flatnonzero(mask) if mask is not None else range(self.num_envs)
            per_game: list[int | None] = [None] * self.num_envs
            for game, game_seed in zip(chosen, seed, strict=True):
                per_game[game] = int(game_seed)
            seed = per_game
        return super().reset(seed=seed, options=options)
