"""The native training loop: steps the vector environment, fills replay, runs updates on schedule.

Updates run while the emulators step (ale-py's ``send``/``recv`` is asynchronous), so the environment
costs little beyond the update itself. Metrics leave through the ``on_metrics`` callback; this module
never knows where they go.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from invaders.agents.dqn import DQNLearner
from invaders.agents.dqn_math import epsilon_greedy, linear_epsilon
from invaders.agents.interval_stats import IntervalStats
from invaders.backends import MetricsCallback, TrainingResult
from invaders.checkpoints import prefixed, unprefixed
from invaders.config import TrainConfig
from invaders.names import Metric
from invaders.progress import progress_bar
from invaders.replay.frame_replay import FrameReplay
from invaders.seeding import emulator_seeds, run_seeds

Evaluator = Callable[[], dict[str, float]]  # scores the online network now: evaluation metrics (invaders.names)


def exploration_epsilon(step: int, config: TrainConfig) -> float:
    """Uniform random play during the warm-up, then epsilon annealed linearly."""
    if step < config.warmup_steps:
        return 1.0
    return linear_epsilon(
        step - config.warmup_steps, config.epsilon_start, config.epsilon_end, config.epsilon_decay_steps
    )


def updates_due(step: int, config: TrainConfig) -> int:
    """Total gradient updates that should have run by agent step ``step``."""
    return max(0, math.floor((step - config.warmup_steps) * config.replay_ratio))


@dataclass
class GamesInPlay:
    """The loop's view of the games in progress, between two vector steps."""

    observations: np.ndarray  # the observation each game shows now
    lives: np.ndarray  # lives left, to spot a lost one
    finals: np.ndarray  # the observation is the last of its game: the next action is ignored
    firsts: np.ndarray  # the observation is the first of its game
    scores: np.ndarray  # unclipped game score so far
    # The online network's greedy actions for ``observations``, when the last update picked them (empty: not yet)
    greedy_actions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))

    @classmethod
    def started(cls, observations: np.ndarray, lives: np.ndarray) -> GamesInPlay:
        num_envs = len(observations)
        return cls(observations, np.array(lives), np.zeros(num_envs, bool), np.ones(num_envs, bool), np.zeros(num_envs))


class DQNTrainer:
    """Owns one training run: the loop, its counters, and their checkpointable state.

    Ctrl-C and SIGTERM are caught between two vector steps, where the state is consistent: the
    trainer checkpoints, then raises KeyboardInterrupt.
    """

    def __init__(
        self,
        env,
        learner: DQNLearner,
        replay: FrameReplay,
        config: TrainConfig,
        on_metrics: MetricsCallback,
        evaluate: Evaluator | None = None,
    ):
        self.env = env
        self.evaluate = evaluate  # scores the online network every config.eval_interval agent steps
        self.learner = learner
        self.replay = replay
        self.config = config
        self.on_metrics = on_metrics
        self.seeds = run_seeds(config.seed)
        self.exploration_rng = np.random.default_rng(self.seeds.exploration)
        self.replay_rng = np.random.default_rng(self.seeds.replay)
        self.result = TrainingResult()
        self.stats = IntervalStats(0)
        self.next_log = config.log_interval
        self.next_eval = config.eval_interval
        self.pending_eval: dict[str, float] = {}  # the latest evaluation's metrics, for the next curve row
        self.resumes = 0
        self.games: GamesInPlay | None = None  # None: new games start when the loop does
        self._stop_signal: int | None = None
        self._started = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        """Replay, networks, optimizer, counters and exploration state: everything the loop needs.

        Games in progress are saved only with an environment that can save its emulators
        (``state_dict``/``load_state_dict``); ale-py's vector environment cannot.
        """
        state = prefixed("replay", self.replay.state_dict()) | prefixed("learner", self.learner.state_dict())
        if self.games is not None and hasattr(self.env, "state_dict"):
            state |= prefixed("env", self.env.state_dict()) | prefixed("games", asdict(self.games))
        return state | prefixed(
            "trainer",
            {
                "episode_returns": np.asarray(self.result.episode_returns, dtype=np.float64),
                "steps": self.result.steps,
                "wall_time_s": self.result.wall_time_s + time.perf_counter() - self._started,
                "curve": self.result.curve,
                "next_log": self.next_log,
                "next_eval": self.next_eval,
                "eval_wall_time_s": self.result.eval_wall_time_s,
                "resumes": self.resumes,
                "exploration_rng": self.exploration_rng.bit_generator.state,
                "replay_rng": self.replay_rng.bit_generator.state,
                "interval": {"losses": self.stats.losses, "q_means": self.stats.q_means, "returns": self.stats.returns},
            },
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.replay.load_state_dict(unprefixed("replay", state))
        self.learner.load_state_dict(unprefixed("learner", state))
        mine = unprefixed("trainer", state)
        self.result = TrainingResult(
            curve=mine["curve"],
            episode_returns=mine["episode_returns"].tolist(),
            steps=mine["steps"],
            updates=self.learner.updates,
            wall_time_s=mine["wall_time_s"],
            eval_wall_time_s=mine["eval_wall_time_s"],
        )
        self.next_log = mine["next_log"]
        self.next_eval = mine["next_eval"]
        self.resumes = mine["resumes"] + 1
        self.exploration_rng.bit_generator.state = mine["exploration_rng"]
        self.replay_rng.bit_generator.state = mine["replay_rng"]
        self.stats.reset(self.result.steps)
        interval = mine["interval"]
        self.stats.losses, self.stats.q_means, self.stats.returns = (
            interval["losses"],
            interval["q_means"],
            interval["returns"],
        )
        games = unprefixed("games", state)
        if games and hasattr(self.env, "load_state_dict"):
            self.env.load_state_dict(unprefixed("env", state))
            self.games = GamesInPlay(**{name: np.array(value) for name, value in games.items()})
        else:
            # The games in progress are lost: their last observation becomes a final one
            # (bootstrapped like a time-limit cut) and the environments start new games.
            self.replay.end_episodes()
            self.games = None

    @property
    def steps(self) -> int:
        """Agent steps trained so far."""
        return self.result.steps

    def _request_stop(self, signum, frame) -> None:
        self._stop_signal = signum

    def run(
        self,
        on_checkpoint: Callable[[DQNTrainer], None] | None = None,
        checkpoint_interval: int = 0,
        show_progress: bool = True,
    ) -> TrainingResult:
        """Train until ``config.steps`` agent steps (transitions, not counting ignored reset steps)."""
        # Only the main thread may handle signals: a Ray Tune trial runs here in another one, and Tune stops it.
        in_main_thread = threading.current_thread() is threading.main_thread()
        signals = (signal.SIGINT, signal.SIGTERM) if in_main_thread else ()
        handlers = {sig: signal.signal(sig, self._request_stop) for sig in signals}
        self._started = time.perf_counter()
        try:
            self._loop(on_checkpoint, checkpoint_interval, show_progress)
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        self.result.updates = self.learner.updates
        self.result.wall_time_s += time.perf_counter() - self._started
        return self.result

    def _evaluate_now(self) -> None:
        """Score the online network on the validation games; its own seeds leave training's streams untouched."""
        started = time.perf_counter()
        self.pending_eval = self.evaluate()
        self.result.eval_wall_time_s += time.perf_counter() - started
        self.on_metrics(self.pending_eval, self.result.steps)
        self.next_eval = (self.result.steps // self.config.eval_interval + 1) * self.config.eval_interval

    def _loop(self, on_checkpoint, checkpoint_interval: int, show_progress: bool) -> None:
        config, env, replay, learner, result, stats = (
            self.config,
            self.env,
            self.replay,
            self.learner,
            self.result,
            self.stats,
        )
        num_actions = int(env.single_action_space.n)
        if self.games is None:
            observations, info = env.reset(seed=emulator_seeds(self.seeds.emulators, env.num_envs, self.resumes))
            self.games = GamesInPlay.started(observations, info["lives"])
        games = self.games
        next_checkpoint = (
            (result.steps // checkpoint_interval + 1) * checkpoint_interval if checkpoint_interval else None
        )
        bar = progress_bar(config.steps, "train", show_progress, done=result.steps)
        while result.steps < config.steps:
            epsilon = exploration_epsilon(result.steps, config)
            if len(games.greedy_actions):
                greedy = games.greedy_actions
            elif epsilon < 1.0:
                greedy = learner.greedy_actions(games.observations)
            else:
                greedy = np.zeros(env.num_envs, dtype=np.int32)
            actions = epsilon_greedy(greedy, epsilon, num_actions, self.exploration_rng)
            env.send(actions)
            # Sampled while the emulators step, from the memory before this step's transitions.
            due = updates_due(result.steps, config) - learner.updates if replay.sampleable() > 0 else 0
            batches = [replay.sample(config.batch_size, self.replay_rng) for _ in range(due)]
            next_observations, rewards, terminated, truncated, info = env.recv()
            next_greedy = np.empty(0, np.int32)
            for index, batch in enumerate(batches):
                # The last update also picks the next step's greedy actions, in the same compiled call.
                last = index == len(batches) - 1
                update = learner.update(batch, act_on=next_observations if last else None)
                stats.losses.append(update.loss)
                stats.q_means.append(update.q_mean)
                if last:
                    next_greedy = update.greedy_actions

            # Clipped rewards and life-loss terminals are for learning only; the score stays the game's.
            life_lost = (info["lives"] < games.lives) & config.terminal_on_life_loss
            learn_rewards = np.sign(rewards) if config.clip_rewards else rewards
            terminals = (terminated | life_lost) & ~games.finals
            replay.add(games.observations[:, -1], actions, learn_rewards, terminals, games.finals, games.firsts)

            acted = ~games.finals
            games.scores += np.where(acted, rewards, 0)
            result.steps += int(acted.sum())
            ended = (terminated | truncated) & acted
            for game in np.flatnonzero(ended):
                score = float(games.scores[game])
                result.episode_returns.append(score)
                stats.returns.append(score)
                self.on_metrics({Metric.TRAIN_GAME_SCORE: score}, result.steps)
                bar.set_postfix(score=f"{score:.0f}", eps=f"{epsilon:.2f}", refresh=False)
            games.scores[ended] = 0.0
            games.firsts, games.finals = games.finals, ended
            games.lives = np.array(info["lives"])
            games.observations, games.greedy_actions = next_observations, next_greedy
            bar.update(int(acted.sum()))

            if self.evaluate and config.eval_interval and result.steps >= self.next_eval:
                self._evaluate_now()
            if result.steps >= self.next_log or result.steps >= config.steps:
                row = stats.row(result.steps, len(result.episode_returns), learner.updates, epsilon)
                result.curve.append({"step": result.steps, **row, **self.pending_eval})
                self.pending_eval = {}
                self.on_metrics({key: value for key, value in row.items() if not math.isnan(value)}, result.steps)
                self.next_log = (result.steps // config.log_interval + 1) * config.log_interval
            if on_checkpoint and next_checkpoint and result.steps >= next_checkpoint and result.steps < config.steps:
                on_checkpoint(self)
                next_checkpoint += checkpoint_interval
            if self._stop_signal is not None:
                bar.close()
                if on_checkpoint:
                    on_checkpoint(self)
                raise KeyboardInterrupt
        bar.close()
