"""Replay memory that stores every 84x84 frame once and rebuilds stacked observations by index.

Memory holds one ring per environment. Slot ``t`` of a ring keeps the newest frame of the
observation seen at step ``t``, the action taken from it, the reward that followed, whether that
transition ended in a terminal state, and whether the observation is the final one of its episode
(its action was ignored by the environment's reset). Indices are absolute step counts; the ring
position is ``index % capacity``. Frames older than an episode's first observation read as zeros,
exactly as ale-py's frame stack starts an episode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from invaders.replay.n_step import n_step_returns


def stack_indices(index: np.ndarray, episode_start: np.ndarray, stack: int) -> tuple[np.ndarray, np.ndarray]:
    """Absolute indices of the ``stack`` frames ending at ``index`` (oldest first), and which are real.

    Frames before ``episode_start`` belong to another episode: they are masked out (read as zeros).
    """
    indices = index[:, None] - np.arange(stack - 1, -1, -1)[None, :]
    return indices, indices >= episode_start[:, None]


@dataclass
class Batch:
    """A sampled batch, ready for the update: observations are ``(batch, stack, H, W)`` uint8."""

    observations: np.ndarray
    actions: np.ndarray
    returns: np.ndarray
    discounts: np.ndarray
    next_observations: np.ndarray


class FrameReplay:
    """Uniform replay of n-step transitions from ``num_envs`` parallel environments.

    ``capacity`` counts transitions in all rings together; each ring keeps ``capacity // num_envs``.
    """

    def __init__(
        self, capacity: int, num_envs: int, frame_shape: tuple[int, int], stack: int, n_step: int, gamma: float
    ):
        self.capacity_per_env = capacity // num_envs
        self.num_envs = num_envs
        self.stack = stack
        self.n_step = n_step
        self.gamma = gamma
        shape = (num_envs, self.capacity_per_env)
        self.frames = np.zeros(shape + tuple(frame_shape), dtype=np.uint8)
        self.actions = np.zeros(shape, dtype=np.uint8)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.terminals = np.zeros(shape, dtype=bool)
        self.finals = np.zeros(shape, dtype=bool)
        self.episode_starts = np.zeros(shape, dtype=np.int64)
        self.written = 0  # slots written per ring (all rings advance together)
        self._current_start = np.zeros(num_envs, dtype=np.int64)

    @property
    def nbytes(self) -> int:
        fields = (self.frames, self.actions, self.rewards, self.terminals, self.finals, self.episode_starts)
        return sum(array.nbytes for array in fields)

    def add(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        finals: np.ndarray,
        firsts: np.ndarray,
    ) -> None:
        """Append one vector step: the newest frame of each observation and what followed it.

        ``finals[i]``: the observation is the last of its episode (the action was ignored).
        ``firsts[i]``: the observation is the first of a new episode.
        """
        self._current_start = np.where(firsts, self.written, self._current_start)
        position = self.written % self.capacity_per_env
        self.frames[:, position] = frames
        self.actions[:, position] = actions
        self.rewards[:, position] = rewards
        self.terminals[:, position] = terminals
        self.finals[:, position] = finals
        self.episode_starts[:, position] = self._current_start
        self.written += 1

    def end_episodes(self) -> None:
        """Make the newest observation of every ring the final one of its episode (after a resume,
        the environments start new games; the last transition is dropped, the ones before it
        bootstrap from that observation as after a time-limit cut)."""
        if self.written:
            self.finals[:, (self.written - 1) % self.capacity_per_env] = True

    def sampleable(self) -> int:
        """How many start indices per ring can be sampled now."""
        return max(0, self._high() - self._low())

    def _low(self) -> int:
        # The frame stack of the oldest start must still be in memory.
        return max(0, self.written - self.capacity_per_env) + self.stack - 1

    def _high(self) -> int:
        # n transitions after the start, and the observation that follows them, must be written.
        return self.written - self.n_step

    def sample(self, batch_size: int, rng: np.random.Generator) -> Batch:
        envs = rng.integers(0, self.num_envs, batch_size)
        starts = rng.integers(self._low(), self._high(), batch_size)
        # A final observation has no transition: draw again (shifting to a neighbour would favour it).
        final = self.finals[envs, starts % self.capacity_per_env]
        for _ in range(1_000):
            if not final.any():
                break
            starts[final] = rng.integers(self._low(), self._high(), int(final.sum()))
            final = self.finals[envs, starts % self.capacity_per_env]
        else:
            raise RuntimeError("replay memory holds no transition to sample yet")
        window = starts[:, None] + np.arange(self.n_step)[None, :]
        returns, discounts, offsets = n_step_returns(
            self.rewards[envs[:, None], window % self.capacity_per_env],
            self.terminals[envs[:, None], window % self.capacity_per_env],
            self.finals[envs[:, None], (window + 1) % self.capacity_per_env],
            self.gamma,
        )
        return Batch(
            observations=self._stacked(envs, starts),
            actions=self.actions[envs, starts % self.capacity_per_env].astype(np.int32),
            returns=returns,
            discounts=discounts,
            next_observations=self._stacked(envs, starts + offsets),
        )

    def _stacked(self, envs: np.ndarray, indices: np.ndarray) -> np.ndarray:
        episode_start = self.episode_starts[envs, indices % self.capacity_per_env]
        frame_indices, real = stack_indices(indices, episode_start, self.stack)
        frames = self.frames[envs[:, None], frame_indices % self.capacity_per_env]
        frames[~real] = 0
        return frames

    _RINGS = ("frames", "actions", "rewards", "terminals", "finals", "episode_starts")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Everything needed to restore the memory exactly (for checkpoints): only the slots written,
        so an early checkpoint of a large memory stays small; one array per environment's ring, each
        contiguous in memory, so it is written in large blocks without a copy."""
        filled = min(self.written, self.capacity_per_env)
        state = {
            f"{name}.{env}": getattr(self, name)[env, :filled] for name in self._RINGS for env in range(self.num_envs)
        }
        return {**state, "written": np.asarray(self.written), "current_start": self._current_start}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        filled = min(int(state["written"]), self.capacity_per_env)
        for name in self._RINGS:
            for env in range(self.num_envs):
                getattr(self, name)[env, :filled] = state[f"{name}.{env}"]
        self.written = int(state["written"])
        self._current_start = np.array(state["current_start"], dtype=np.int64)
