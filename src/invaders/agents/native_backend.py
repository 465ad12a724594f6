"""The native backend (``train.backend: native``): this project's TensorFlow DQN, resumable from checkpoints."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np

from invaders.agents.dqn import DQNLearner
from invaders.agents.policy import GreedyPolicy, play_evaluation
from invaders.agents.training import DQNTrainer
from invaders.backends import MetricsCallback, TrainedAgent, TrainingJob
from invaders.config import Params
from invaders.envs.atari import make_vector_env, num_actions, observation_shape
from invaders.errors import ResourceError
from invaders.evaluation.statistics import bootstrap_ci
from invaders.hardware import has_native_bf16, learner_precision
from invaders.models.networks import NetworkSpec, build_q_network, check_fits, load_model
from invaders.names import Metric
from invaders.replay.frame_replay import FrameReplay
from invaders.seeding import run_seeds

# What training holds besides the replay memory (TensorFlow, networks, batches), with a margin over what
# docs/speed.md measures.
TRAINING_OVERHEAD_BYTES = 1_500_000_000
EVAL_BOOTSTRAP_SAMPLES = 2_000  # resamples for the interval of an evaluation while training (a few games)


def available_memory() -> int | None:
    """Bytes the kernel can give without swapping (Linux ``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_memory(capacity: int, replay_bytes: int, available: int | None) -> None:
    """ResourceError now, not an out-of-memory kill hours later: the replay arrays are only touched as they fill."""
    needed = replay_bytes + TRAINING_OVERHEAD_BYTES
    if available is not None and needed > available:
        raise ResourceError(
            f"train.replay_capacity = {capacity}: training needs {needed / 1e9:.1f} GB "
            f"({replay_bytes / 1e9:.1f} GB of replay), {available / 1e9:.1f} GB of memory is available"
        )


def build_trainer(params: Params, initial: Path, on_metrics: MetricsCallback) -> tuple[DQNTrainer, NetworkSpec]:
    """The network saved in ``initial``, its learner, the environments and replay memory, wired together."""
    import keras

    config = params.train
    keras.utils.set_random_seed(run_seeds(config.seed).learner)
    precision = learner_precision(config.precision)
    if precision == "bfloat16" and not has_native_bf16():
        print(
            "train: warning: train.precision = bfloat16 on a CPU without native bf16 (AVX512_BF16 or AMX): "
            "TensorFlow emulates it, several times slower than float32; auto picks float32 here",
            file=sys.stderr,
        )
    online, spec = load_model(initial, precision=precision)
    check_fits(spec, initial, observation_shape(params.env), num_actions(params.env))
    replay = FrameReplay(
        config.replay_capacity,
        config.num_envs,
        spec.input_shape[1:],
        params.env.frame_stack,
        config.n_step,
        config.gamma,
    )
    # Only the slots this run will write take memory; a 10k-step run in a 100k memory needs a tenth.
    written = min(1.0, (config.steps / config.num_envs + 1) / replay.capacity_per_env)
    check_memory(config.replay_capacity, int(replay.nbytes * written), available_memory())
    learner = DQNLearner(
        online, build_q_network(spec, precision=precision), config, precision, quantiles=spec.quantiles
    )
    env = make_vector_env(params.env, config.num_envs)
    evaluate = functools.partial(validation_scores, params, GreedyPolicy(online))  # compiled once, reused
    return DQNTrainer(env, learner, replay, config, on_metrics, evaluate), spec


def validation_scores(params: Params, greedy: GreedyPolicy) -> dict[str, float]:
    """The agent acting by ``greedy`` on the first ``train.eval_episodes`` validation games: the mean score and its bootstrap CI."""
    episodes = play_evaluation(
        greedy, params.env, params.evaluation, "validation", params.train.eval_episodes, show_progress=False
    )
    scores = np.array([episode.score for episode in episodes])
    low, high = bootstrap_ci(scores, params.report.confidence, EVAL_BOOTSTRAP_SAMPLES)
    return {
        Metric.EVAL_SCORE_MEAN: float(scores.mean()),
        Metric.EVAL_SCORE_CI_LOW: low,
        Metric.EVAL_SCORE_CI_HIGH: high,
    }


def train(job: TrainingJob) -> TrainedAgent:
    trainer, spec = build_trainer(job.params, job.initial, job.on_metrics)
    if job.checkpoints:
        job.checkpoints.restore(trainer)
    result = trainer.run(job.checkpoints, job.params.train.checkpoint_interval, job.show_progress)
    return TrainedAgent(trainer.learner.online, spec, result)
