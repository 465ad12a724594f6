"""Atari environments under the project's protocol, built from ``EnvConfig``.

One place decides how frames reach an agent. ``deepmind`` preprocessing uses ale-py's native vector
environment: frame skip with max-pooling over the last two frames, 84x84 grayscale, a zero-padded
frame stack, sticky actions, a frame cap per episode. Rewards are the unclipped game score and a
lost life does not end the game: clipping and life-loss terminals are decided by the learner.
"""

from __future__ import annotations

import os

from ale_py.vector_env import AtariVectorEnv

from invaders.config import EnvConfig

SCREEN_HEIGHT, SCREEN_WIDTH = 210, 160  # the Atari 2600 screen, pixels


def make_vector_env(config: EnvConfig, num_envs: int, screen: bool = False):
    """``num_envs`` games stepped together; observations are batched as ``observation_shape(config)``.
    With ``screen``, for videos, the last frame of each observation (``[:, -1]``) is the game's colour
    screen, 210x160 RGB; the games are the same for the same seeds and actions.

    Autoreset is ale-py's default ``next-step``: after a step that ends a game, the next step ignores
    its action and returns the first observation of a new game with reward 0. ``info`` carries
    ``lives`` and ``episode_frame_number`` per game.
    """
    if config.preprocessing == "raw":
        from invaders.envs.raw import make_raw_vector_env

        return make_raw_vector_env(config, num_envs)
    return AtariVectorEnv(
        game=config.game,
        num_envs=num_envs,
        num_threads=min(num_envs, os.cpu_count() or 1),
        frameskip=config.frame_skip,
        repeat_action_probability=config.repeat_action_probability,
        noop_max=config.noop_max,
        max_num_frames_per_episode=config.max_episode_frames,
        img_height=SCREEN_HEIGHT if screen else config.screen_size,
        img_width=SCREEN_WIDTH if screen else config.screen_size,
        grayscale=not screen,
        stack_num=1 if screen else config.frame_stack,
        maxpool=True,
        episodic_life=False,
        reward_clipping=False,
        use_fire_reset=False,
    )


def make_single_env(config: EnvConfig):
    """One gymnasium env giving one frame per step, for learners that build the frame stack themselves
    (keras-rl2's memory): the same frames as ``make_vector_env``, without the stack."""
    import ale_py
    import gymnasium

    if config.preprocessing == "raw":
        from invaders.envs.raw import make_raw_env

        return make_raw_env(config)
    gymnasium.register_envs(ale_py)
    # frameskip=1: AtariPreprocessing skips (and max-pools) frames itself; the id's own skip would double it.
    base = gymnasium.make(
        config.id,
        frameskip=1,
        repeat_action_probability=config.repeat_action_probability,
        max_num_frames_per_episode=config.max_episode_frames,
    )
    return gymnasium.wrappers.AtariPreprocessing(
        base,
        noop_max=config.noop_max,
        frame_skip=config.frame_skip,
        screen_size=config.screen_size,
        terminal_on_life_loss=False,
        grayscale_obs=True,
        scale_obs=False,
    )


def observation_shape(config: EnvConfig) -> tuple[int, ...]:
    """Shape of one observation as the Q-network sees it (frame-major)."""
    if config.preprocessing == "deepmind":
        return (config.frame_stack, config.screen_size, config.screen_size)
    return (3, 210, 160, 3)  # the notebook's window of raw RGB frames; keras-rl2 backend only


def num_actions(config: EnvConfig) -> int:
    """Size of the game's minimal action set (6 for Space Invaders)."""
    import ale_py

    interface = ale_py.ALEInterface()
    interface.setLoggerMode(ale_py.LoggerMode.Error)
    interface.loadROM(ale_py.roms.get_rom_path(config.game))
    return len(interface.getMinimalActionSet())
