"""The native training loop: steps the vector environment, fills replay, runs updates on schedule.

Updates run while the emulators step (ale-py's ``send``/``recv`` is asynchronous), so the environment
costs little beyond the update itself. Metrics leave through the ``on_metrics`` callback; this module
never knows where they go.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from invaders.agents.dqn import DQNLearner
from invaders.agents.dqn_math import epsilon_greedy, linear_epsilon
from invaders.config import TrainConfig
from invaders.progress import progress_bar
from invaders.replay.frame_replay import FrameReplay

MetricsCallback = Callable[[dict[str, float], int], None]


@dataclass
class TrainingResult:
    """What a training run produced, besides the learned weights."""

    curve: list[dict[str, float]] = field(default_factory=list)  # one row per log interval
    episode_returns: list[float] = field(default_factory=list)  # unclipped game scores, in order
    steps: int = 0
    updates: int = 0
    wall_time_s: float = 0.0


def exploration_epsilon(step: int, config: TrainConfig) -> float:
    """Uniform random play during the warm-up, then epsilon annealed linearly."""
    if step < config.warmup_steps:
        return 1.0
    return linear_epsilon(step - config.warmup_steps, config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps)


def updates_due(step: int, config: TrainConfig) -> int:
    """Total gradient updates that should have run by agent step ``step``."""
    return max(0, math.floor((step - config.warmup_steps) * config.replay_ratio))


class _IntervalStats:
    """Accumulates what happened since the last logged row."""

    def __init__(self, start_step: int):
        self.reset(start_step)

    def reset(self, step: int) -> None:
        self.start_step, self.start_time = step, time.perf_counter()
        self.losses: list[float] = []
        self.q_means: list[float] = []
        self.returns: list[float] = []

    def row(self, step: int, episodes: int, updates: int, epsilon: float) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self.start_time, 1e-9)
        row = {
            "train/steps_per_second": (step - self.start_step) / elapsed,
            "train/epsilon": epsilon,
            "train/episodes": float(episodes),
            "train/updates": float(updates),
            "train/loss": float(np.mean(self.losses)) if self.losses else math.nan,
            "train/q_mean": float(np.mean(self.q_means)) if self.q_means else math.nan,
            "train/episode_return": float(np.mean(self.returns)) if self.returns else math.nan,
        }
        self.reset(step)
        return row


def train_dqn(
    env,
    learner: DQNLearner,
    replay: FrameReplay,
    config: TrainConfig,
    on_metrics: MetricsCallback,
    show_progress: bool = True,
) -> TrainingResult:
    """Train for ``config.steps`` agent steps (transitions, not counting the ignored reset steps)."""
    rng = np.random.default_rng(config.seed)
    num_envs = env.num_envs
    num_actions = int(env.single_action_space.n)
    observations, info = env.reset(seed=config.seed)
    lives = info["lives"]
    finals = np.zeros(num_envs, dtype=bool)  # observation is the last of its game: its action is ignored
    firsts = np.ones(num_envs, dtype=bool)
    game_returns = np.zeros(num_envs)
    result = TrainingResult()
    stats = _IntervalStats(0)
    next_log = config.log_interval
    started = time.perf_counter()
    bar = progress_bar(config.steps, "train", show_progress)
    while result.steps < config.steps:
        epsilon = exploration_epsilon(result.steps, config)
        greedy = learner.greedy_actions(observations) if epsilon < 1.0 else np.zeros(num_envs, dtype=np.int32)
        actions = epsilon_greedy(greedy, epsilon, num_actions, rng)
        env.send(actions)
        if replay.sampleable() > 0:
            for _ in range(updates_due(result.steps, config) - learner.updates):
                loss, q_mean = learner.update(replay.sample(config.batch_size, rng))
                stats.losses.append(loss)
                stats.q_means.append(q_mean)
        next_observations, rewards, terminated, truncated, info = env.recv()

        life_lost = (info["lives"] < lives) & config.terminal_on_life_loss
        learn_rewards = np.sign(rewards) if config.clip_rewards else rewards
        replay.add(observations[:, -1], actions, learn_rewards, (terminated | life_lost) & ~finals, finals, firsts)

        acted = ~finals
        game_returns += np.where(acted, rewards, 0)
        result.steps += int(acted.sum())
        ended = (terminated | truncated) & acted
        for game in np.flatnonzero(ended):
            score = float(game_returns[game])
            result.episode_returns.append(score)
            stats.returns.append(score)
            on_metrics({"train/game_score": score}, result.steps)
            bar.set_postfix(score=f"{score:.0f}", eps=f"{epsilon:.2f}", refresh=False)
        game_returns[ended] = 0.0
        firsts, finals = finals, ended
        lives = info["lives"]
        observations = next_observations
        bar.update(int(acted.sum()))

        if result.steps >= next_log or result.steps >= config.steps:
            row = stats.row(result.steps, len(result.episode_returns), learner.updates, epsilon)
            result.curve.append({"step": result.steps, **row})
            on_metrics({key: value for key, value in row.items() if not math.isnan(value)}, result.steps)
            next_log += config.log_interval
    bar.close()
    result.updates = learner.updates
    result.wall_time_s = time.perf_counter() - started
    return result
