"""Tiny games with the interface of ale-py's vector environment, for fast agent tests.

Autoreset is next-step in all of them, as in ale-py: after a step that ends a game, the next step
ignores its action and returns the first observation of a new game with reward 0.
"""

from __future__ import annotations

import json

import numpy as np
from gymnasium.spaces import Discrete


class FakeVectorEnv:
    """What the games share: ``num_envs`` games stepped together, stacks of ``stack`` square frames,
    next-step autoreset, ``send``/``recv``. A game says how it starts (``_first_frame``) and plays one
    step (``_play``)."""

    def __init__(self, num_envs: int, size: int, stack: int, num_actions: int):
        self.num_envs = num_envs
        self.size = size
        self.stack = stack
        self.single_action_space = Discrete(num_actions)

    def _first_frame(self, env: int) -> np.ndarray:
        raise NotImplementedError

    def _play(self, env: int, action: int) -> tuple[float, bool, np.ndarray]:
        """One step of game ``env``: its reward, whether it ended, the next frame."""
        raise NotImplementedError

    def _lives(self) -> np.ndarray:
        return np.ones(self.num_envs, dtype=np.int32)

    def reset(self, seed: int | np.ndarray | None = None, options: dict | None = None):
        """ale-py's reset: all games, or those ``options["reset_mask"]`` selects (with one seed each)."""
        mask = (options or {}).get("reset_mask")
        if mask is None:
            self.frames = np.zeros((self.num_envs, self.stack, self.size, self.size), dtype=np.uint8)
            self.t = np.zeros(self.num_envs, dtype=int)
            self.pending_reset = np.zeros(self.num_envs, dtype=bool)
            mask = np.ones(self.num_envs, dtype=bool)
        self.rng = np.random.default_rng(None if seed is None else np.asarray(seed).tolist())
        for env in np.flatnonzero(mask):
            self.pending_reset[env] = False
            self._new_game(env)
        return self.frames.copy(), self._info()

    def _info(self):
        return {"lives": self._lives(), "episode_frame_number": self.t * 4}

    def _push(self, env: int, frame: np.ndarray) -> None:
        self.frames[env] = np.roll(self.frames[env], -1, axis=0)
        self.frames[env, -1] = frame

    def _new_game(self, env: int) -> None:
        self.frames[env] = 0
        self.t[env] = 0
        self._push(env, self._first_frame(env))

    def _blank(self) -> np.ndarray:
        return np.zeros((self.size, self.size), dtype=np.uint8)

    def _band(self, band: int) -> np.ndarray:
        """A frame with vertical band ``band`` of ``num_actions`` lit."""
        frame = self._blank()
        width = self.size // self.single_action_space.n
        frame[:, band * width : (band + 1) * width] = 255
        return frame

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
            rewards[env], terminated[env], frame = self._play(env, int(self._actions[env]))
            self.pending_reset[env] = terminated[env]
            self._push(env, frame)
        return self.frames.copy(), rewards, terminated, np.zeros(self.num_envs, dtype=bool), self._info()

    def step(self, actions: np.ndarray):
        self.send(actions)
        return self.recv()


class BandGameVectorEnv(FakeVectorEnv):
    """Each step shows a bright block in one of ``num_actions`` vertical bands; pressing the action of
    that band scores 1. A game lasts ``length`` steps. The best return (``length``) needs the pixels;
    a random agent scores ``length / num_actions``. Rewards follow the current frame only.
    """

    def __init__(self, num_envs: int = 2, size: int = 44, stack: int = 4, num_actions: int = 3, length: int = 10):
        super().__init__(num_envs, size, stack, num_actions)
        self.length = length
        self.bands = np.zeros(num_envs, dtype=int)

    def _first_frame(self, env: int) -> np.ndarray:
        self.bands[env] = self.rng.integers(self.single_action_space.n)
        return self._band(self.bands[env])

    def _play(self, env: int, action: int) -> tuple[float, bool, np.ndarray]:
        reward = float(action == self.bands[env])
        self.t[env] += 1
        return reward, self.t[env] >= self.length, self._first_frame(env)


class PointsAndLivesVectorEnv(FakeVectorEnv):
    """A scripted game that pays Space Invaders' reward sizes and loses lives, to check what is learned
    from and what is scored. Actions do not matter.

    Every game plays ``REWARDS`` in order, one per step; lives drop after the transitions in
    ``LIFE_LOST_AFTER`` and the game ends (terminated) after the last one. Each frame shows the step
    number, so the replay's contents can be read back.
    """

    REWARDS = (5.0, 0.0, 10.0, 200.0, 0.0, 30.0, 15.0, 0.0, 25.0, 0.0, 20.0, 5.0)
    LIFE_LOST_AFTER = (3, 7, 11)  # transitions after which a life is gone; the last one ends the game
    LIVES = 3

    def __init__(self, num_envs: int = 2, size: int = 8, stack: int = 4):
        super().__init__(num_envs, size, stack, num_actions=3)

    def _lives(self) -> np.ndarray:
        lost = [sum(t > after for after in self.LIFE_LOST_AFTER) for t in self.t]
        return self.LIVES - np.array(lost, dtype=np.int32)

    def _step_number(self, env: int) -> np.ndarray:
        return np.full((self.size, self.size), self.t[env] + 1, dtype=np.uint8)  # never zero

    def _first_frame(self, env: int) -> np.ndarray:
        return self._step_number(env)

    def _play(self, env: int, action: int) -> tuple[float, bool, np.ndarray]:
        reward = self.REWARDS[self.t[env]]
        self.t[env] += 1
        return reward, self.t[env] == len(self.REWARDS), self._step_number(env)


class DelayedRewardVectorEnv(FakeVectorEnv):
    """A game that pays only ``delay`` steps after the decision that earns it, so learning it needs
    value carried back through time by bootstrapped targets.

    The first frame of a game shows a bright block in one of ``num_actions`` bands; the first action
    decides the game: pressing that band's action wins. For the next ``delay`` steps the frames show
    whether the game is won (a bright top or bottom half) and a step marker; actions then do nothing.
    The last of those steps pays 1 for a won game and 0 otherwise, and ends the game. The best return
    is 1, a random agent's ``1 / num_actions``. The environment can save and restore its state, so a
    training run on it resumes exactly.
    """

    def __init__(self, num_envs: int = 2, size: int = 44, stack: int = 4, num_actions: int = 3, delay: int = 5):
        super().__init__(num_envs, size, stack, num_actions)
        self.delay = delay
        self.cues = np.zeros(num_envs, dtype=int)
        self.won = np.zeros(num_envs, dtype=bool)

    def _first_frame(self, env: int) -> np.ndarray:
        self.won[env] = False
        self.cues[env] = self.rng.integers(self.single_action_space.n)
        return self._band(self.cues[env])

    def _play(self, env: int, action: int) -> tuple[float, bool, np.ndarray]:
        if self.t[env] == 0:
            self.won[env] = action == self.cues[env]
        self.t[env] += 1
        ended = self.t[env] > self.delay
        frame = self._blank()
        half = self.size // 2
        (frame[:half] if self.won[env] else frame[half:])[:] = 128
        frame[:4, 4 * self.t[env] : 4 * self.t[env] + 4] = 255  # which step of the wait this is
        return float(self.won[env] and ended), ended, frame

    _STATE = ("frames", "cues", "won", "t", "pending_reset")

    def state_dict(self) -> dict[str, np.ndarray]:
        state = {name: np.copy(getattr(self, name)) for name in self._STATE}
        state["rng"] = np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), dtype=np.uint8)
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        for name in self._STATE:
            setattr(self, name, np.array(state[name]))
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = json.loads(np.asarray(state["rng"]).tobytes())
