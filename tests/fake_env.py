"""A tiny image game with the interface of ale-py's vector environment, for fast agent tests.

Each step shows a bright block in one of ``num_actions`` vertical bands; pressing the action of
that band scores 1. A game lasts ``length`` steps. The best return (``length``) needs the pixels;
a random agent scores ``length / num_actions``. Autoreset is next-step, as in ale-py.
"""

from __future__ import annotations

import numpy as np
from gymnasium.spaces import Discrete


class BandGameVectorEnv:
    def __init__(self, num_envs: int = 2, size: int = 44, stack: int = 4, num_actions: int = 3, length: int = 10):
        self.num_envs = num_envs
        self.size = size
        self.stack = stack
        self.length = length
        self.single_action_space = Discrete(num_actions)
        self._actions = None

    def reset(self, seed: int | None = None):
        self.rng = np.random.default_rng(seed)
        self.frames = np.zeros((self.num_envs, self.stack, self.size, self.size), dtype=np.uint8)
        self.bands = np.zeros(self.num_envs, dtype=int)
        self.t = np.zeros(self.num_envs, dtype=int)
        self.pending_reset = np.zeros(self.num_envs, dtype=bool)
        for env in range(self.num_envs):
            self._new_game(env)
        return self.frames.copy(), self._info()

    def _info(self):
        return {"lives": np.ones(self.num_envs, dtype=np.int32), "episode_frame_number": self.t * 4}

    def _show(self, env: int) -> None:
        self.bands[env] = self.rng.integers(self.single_action_space.n)
        frame = np.zeros((self.size, self.size), dtype=np.uint8)
        width = self.size // self.single_action_space.n
        frame[:, self.bands[env] * width : (self.bands[env] + 1) * width] = 255
        self.frames[env] = np.roll(self.frames[env], -1, axis=0)
        self.frames[env, -1] = frame

    def _new_game(self, env: int) -> None:
        self.frames[env] = 0
        self.t[env] = 0
        self._show(env)

    def send(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def recv(self):
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        for env in range(self.num_envs):
            if self.pending_reset[env]:
                self.pending_reset[env] = False
                self._new_game(env)
                continue
            rewards[env] = float(self._actions[env] == self.bands[env])
            self.t[env] += 1
            terminated[env] = self.t[env] >= self.length
            self.pending_reset[env] = terminated[env]
            self._show(env)
        return self.frames.copy(), rewards, terminated, np.zeros(self.num_envs, dtype=bool), self._info()

    def step(self, actions: np.ndarray):
        self.send(actions)
        return self.recv()
