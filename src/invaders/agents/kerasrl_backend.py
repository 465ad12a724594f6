"""The keras-rl2 backend (``train.backend: keras-rl2``): keras-rl2's own ``DQNAgent.fit`` trains the network.

keras-rl2 needs tf_keras and TF1 graph mode for the whole process (see ``kerasrl_compat``), so it runs
in a child process (``python -m invaders.agents.kerasrl_backend``) and this process keeps its Keras 3
and eager TensorFlow. The child streams metrics back over a pipe, one JSON object per line; they are
forwarded to ``on_metrics`` as they arrive. At the end it writes the trained weights, which are loaded
into the Keras 3 network of the same layout and returned.

How ``params`` map onto keras-rl2:

- ``train.steps`` -> ``fit(nb_steps)``: agent steps; ``warmup_steps`` -> ``nb_steps_warmup``;
  ``replay_capacity`` -> ``SequentialMemory(limit)``; ``batch_size``, ``gamma``; ``target_sync_updates``
  -> ``target_model_update`` (a hard copy every that many updates, counted in agent steps as keras-rl2
  does: updates x ``train_interval``); ``double_dqn`` -> ``enable_double_dqn``.
- The network's head (``NetworkSpec.head``): ``dueling-shared`` is keras-rl2's own head
  (``enable_dueling_network`` with ``dueling_type='avg'`` on the plain network: one Dense(actions + 1) on
  the last hidden layer, the same weight list as this project's ``dueling-shared``); any other head
  (``plain``, ``dueling-streams``) comes built in the model keras-rl2 is given.
- ``replay_ratio`` -> ``train_interval = 1 / replay_ratio`` (config accepts only 1/k: keras-rl2 makes
  at most one update per step).
- ``epsilon_start/end/decay_steps`` -> ``LinearAnnealedPolicy(EpsGreedyQPolicy(), value_max, value_min,
  nb_steps)``. keras-rl2 anneals from step 0, warm-up included (the native loop starts after it).
  ``value_test`` is ``evaluation.epsilon`` but unused: the evaluate stage plays the trained network.
- Adam from ``learning_rate``, ``adam_epsilon`` and ``max_grad_norm`` (global-norm clip); Huber loss
  (``delta_clip=1``), as the native learner.
- ``clip_rewards``: a ``Processor`` clips rewards to their sign for learning; reported game scores
  are the unclipped scores of whole games (the env adapter sums the raw rewards).
- States: ``env.preprocessing: deepmind`` feeds one 84x84 grayscale frame per step (gymnasium's
  ``AtariPreprocessing`` on a frameskip-1 env: frame skip and max-pooling once, the same frames as
  ale-py's vector env used for evaluation; its no-ops, if ``noop_max`` > 0, are counted in emulator
  frames) and the memory stacks ``env.frame_stack`` of them, zero-padded at a game's start;
  ``raw`` feeds the id's 210x160x3 frames in windows of ``train.memory_window`` (must equal the
  network's window, 3).
- Not available in keras-rl2, ignored: ``n_step`` (1-step targets), ``terminal_on_life_loss`` (``fit``
  resets the game at every terminal), ``num_envs`` (one game), ``checkpoint_interval`` (no resume). A game
  cut by the frame cap is learned as terminal.

Initial weights: the network saved by build-model (``initial``) is loaded whole into keras-rl2's model
(same layout). If ``model.dueling`` differs from the saved network's (a stale ``initial``), the leading
layers that fit (the body) are loaded and the freshly initialised rest is kept, with a warning.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

import invaders
from invaders.agents.interval_stats import IntervalStats
from invaders.backends import TrainedAgent, TrainingJob, TrainingResult
from invaders.config import Params, build_params
from invaders.errors import ConfigError, InputError, UserError
from invaders.models.networks import NetworkSpec, check_fits, load_spec, load_weight_arrays, read_weight_arrays
from invaders.names import Metric

_WEIGHTS = "weights.npz"  # the name read_weight_arrays expects
_PROBE_Q = "probe_q.npy"  # keras-rl2's Q-values on a fixed batch: the Keras 3 copy must compute the same


def train_interval(replay_ratio: float) -> int:
    """keras-rl2's ``train_interval`` (agent steps per update) for ``replay_ratio`` (updates per step)."""
    return max(1, round(1.0 / replay_ratio))


def train(job: TrainingJob) -> TrainedAgent:
    """Train the network saved in ``job.initial`` with keras-rl2 (it cannot resume: no checkpoints).

    The agent's model is a Keras 3 network (``build_q_network(spec)``) holding the trained weights.
    """
    params, on_metrics = job.params, job.on_metrics
    initial = Path(job.initial).resolve()
    spec = load_spec(initial)
    check_network_fits(params, spec, initial)  # fail fast, before the child spends seconds starting TensorFlow
    result = TrainingResult()
    with tempfile.TemporaryDirectory(prefix="invaders-kerasrl-") as workdir:
        job_file = Path(workdir) / "job.json"
        job_file.write_text(
            json.dumps(
                {
                    "params": dataclasses.asdict(params),
                    "initial": str(initial),
                    "output": workdir,
                    "show_progress": job.show_progress,
                }
            )
        )
        done = _run_child(job_file, on_metrics, result)
        arrays = read_weight_arrays(Path(workdir))
        probe_q = np.load(Path(workdir) / _PROBE_Q)
    result.steps = int(done["steps"])
    result.updates = int(done["updates"])
    result.wall_time_s = float(done["wall_time_s"])
    trained_spec = spec.with_dueling(params.model.dueling)
    model = _keras3_model(trained_spec, arrays)
    q_values = np.asarray(model(_probe_batch(trained_spec), training=False))
    if not np.allclose(q_values, probe_q, rtol=1e-3, atol=1e-3 * max(1.0, float(np.abs(probe_q).max()))):
        raise RuntimeError(
            "the Keras 3 copy of the keras-rl2 network computes different Q-values: weight layouts differ"
        )
    return TrainedAgent(model, trained_spec, result)


def _probe_batch(spec: NetworkSpec) -> np.ndarray:
    """Two fixed pseudo-random observations for ``spec``, as float32 in 0..255."""
    return np.random.default_rng(12345).integers(0, 256, (2, *spec.input_shape)).astype(np.float32)


def memory_window(params: Params) -> int:
    """Frames per keras-rl2 state: ``env.frame_stack`` (deepmind) or ``train.memory_window`` (raw)."""
    return params.env.frame_stack if params.env.preprocessing == "deepmind" else params.train.memory_window


def check_network_fits(params: Params, spec: NetworkSpec, initial: Path) -> None:
    """ConfigError unless the saved network takes the states keras-rl2 will build from the environment."""
    from invaders.envs.atari import num_actions, observation_shape

    window = memory_window(params)
    if spec.input_shape[0] != window:
        key = "env.frame_stack" if params.env.preprocessing == "deepmind" else "train.memory_window"
        raise ConfigError(
            f"{key} = {window}: the network in {initial} takes states of {spec.input_shape[0]} frames; "
            f"set {key} = {spec.input_shape[0]} or rerun build-model (dvc repro)"
        )
    check_fits(spec, initial, (window, *observation_shape(params.env)[1:]), num_actions(params.env))


def _run_child(job: Path, on_metrics, result) -> dict:
    """Run the keras-rl2 child on ``job``, forwarding its metrics; return its final message."""
    source_root = str(Path(invaders.__file__).resolve().parents[1])
    python_path = os.pathsep.join(filter(None, [source_root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONPATH": python_path}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    read_fd, write_fd = os.pipe()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "invaders.agents.kerasrl_backend", str(job), str(write_fd)],
            pass_fds=(write_fd,),
            env=env,
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    done = error = None
    try:
        with os.fdopen(read_fd, "r") as channel:
            for line in channel:
                message = json.loads(line)
                kind = message["type"]
                if kind == "row":
                    row = message["row"]
                    result.curve.append({"step": message["step"], **row})
                    on_metrics({k: v for k, v in row.items() if not math.isnan(v)}, message["step"])
                elif kind == "score":
                    result.episode_returns.append(message["score"])
                    on_metrics({Metric.TRAIN_GAME_SCORE: message["score"]}, message["step"])
                elif kind == "done":
                    done = message
                elif kind == "error":
                    error = message
        code = child.wait()
    except BaseException:  # Ctrl-C, SIGTERM turned into SystemExit, a failing on_metrics: stop the child
        child.kill()
        child.wait()
        raise
    if error is not None and error.get("user_error"):
        raise UserError(error["message"])
    if code != 0 or done is None:
        detail = f": {error['message']}" if error else "; its error is printed above"
        raise RuntimeError(f"keras-rl2 training process failed (exit code {code}){detail}")
    return done


def _keras3_model(spec: NetworkSpec, arrays: list[np.ndarray]):
    from invaders.models.networks import build_q_network

    model = build_q_network(spec)
    model.set_weights(arrays)
    return model


# --------------------------------------------------------------------------------------------------
# The child process: everything below runs under tf_keras and graph mode.


def _initial_weights(initial: Path, saved: NetworkSpec, trained: NetworkSpec, model) -> list[np.ndarray]:
    """The saved weights, laid out for keras-rl2's ``model``; a changed head is left as initialised."""
    if saved.head == trained.head:
        return load_weight_arrays(initial, model)
    arrays = read_weight_arrays(initial)
    current = model.get_weights()
    fitting = itertools.takewhile(lambda pair: pair[0].shape == pair[1].shape, zip(arrays, current))
    body = [array for array, _ in fitting]
    if not body:
        raise InputError(f"{initial / 'weights.npz'}: weights do not fit the network; rerun build-model (dvc repro)")
    warnings.warn(
        f"{initial}: saved with the {saved.head} head but model.dueling={trained.dueling} builds {trained.head}; "
        f"loaded the {len(body)} leading weight arrays that fit, the rest starts from its initialisation",
        stacklevel=2,
    )
    return body + current[len(body) :]


def _train_in_child(params: Params, initial: Path, output: Path, show_progress: bool, send) -> dict:
    from invaders.agents import kerasrl_compat

    kerasrl_compat.apply()  # first: sets TF_USE_LEGACY_KERAS before TensorFlow loads, then graph mode

    import tf_keras
    from rl.agents.dqn import DQNAgent
    from rl.callbacks import Callback
    from rl.core import Processor
    from rl.memory import SequentialMemory
    from rl.policy import EpsGreedyQPolicy, LinearAnnealedPolicy

    from invaders.envs.atari import make_single_env
    from invaders.models.networks import build_q_network
    from invaders.progress import progress_bar
    from invaders.seeding import emulator_seeds, run_seeds

    warnings.filterwarnings("ignore", message=".*Model.state_updates.*")  # tf_keras' graph-mode path, harmless
    config = params.train
    # keras-rl2 draws its exploration and memory sampling from numpy's global stream: one seed for both.
    seeds = run_seeds(config.seed)
    tf_keras.utils.set_random_seed(seeds.learner)  # python, numpy (policy, memory sampling) and TF graph seeds
    emulator_seed = int(emulator_seeds(seeds.emulators, 1, 0)[0])
    env = kerasrl_compat.GymnasiumAdapter(make_single_env(params.env), seed=emulator_seed)
    spec = load_spec(initial)
    trained = spec.with_dueling(params.model.dueling)
    num_actions = int(env.action_space.n)
    window = memory_window(params)
    # The parent checked the spec against the config; this checks the config's env really gives those frames.
    assert (window, *env.observation_space.shape) == tuple(spec.input_shape), (spec, env.observation_space)

    class RewardProcessor(Processor):
        """Learning sees sign(reward) when clip_rewards; the env adapter still sums the raw game score."""

        def process_reward(self, reward):
            return float(np.sign(reward)) if config.clip_rewards else reward

    policy = LinearAnnealedPolicy(
        EpsGreedyQPolicy(),
        attr="eps",
        value_max=config.epsilon_start,
        value_min=config.epsilon_end,
        value_test=params.evaluation.epsilon,
        nb_steps=config.epsilon_decay_steps,
    )
    # keras-rl2 adds its own dueling head to a plain network; the other heads come built in the model.
    kerasrl_head = trained.head == "dueling-shared"
    agent = DQNAgent(
        model=build_q_network(trained, keras=tf_keras, head="plain" if kerasrl_head else None),
        nb_actions=num_actions,
        memory=SequentialMemory(limit=config.replay_capacity, window_length=window),
        policy=policy,
        gamma=config.gamma,
        batch_size=config.batch_size,
        nb_steps_warmup=config.warmup_steps,
        train_interval=train_interval(config.replay_ratio),
        target_model_update=config.target_sync_updates * train_interval(config.replay_ratio),
        delta_clip=1.0,
        enable_double_dqn=config.double_dqn,
        enable_dueling_network=kerasrl_head,
        dueling_type="avg",
        processor=RewardProcessor(),
    )
    # Before compile: compile clones the target network from the model, so both start from these weights.
    agent.model.set_weights(_initial_weights(initial, spec, trained, agent.model))
    agent.compile(
        kerasrl_compat.legacy_adam(config.learning_rate, config.adam_epsilon, config.max_grad_norm), metrics=[]
    )
    kerasrl_compat.cache_target_q(agent)  # a speed-up: each next state's target Q once per target sync

    # Count every gradient update, with its loss and mean Q: keras-rl2 also trains in the extra
    # forward/backward it runs after a terminal step, which no callback sees.
    stats = IntervalStats()
    updates = {"count": 0}
    trainable = agent.trainable_model
    train_on_batch = trainable.train_on_batch
    q_index = next(i for i, name in enumerate(trainable.metrics_names) if name.endswith("mean_q"))

    def counted_train_on_batch(*args, **kwargs):
        outputs = train_on_batch(*args, **kwargs)
        updates["count"] += 1
        stats.losses.append(float(outputs[0]))
        stats.q_means.append(float(outputs[q_index]))
        return outputs

    trainable.train_on_batch = counted_train_on_batch
    bar = progress_bar(config.steps, "train keras-rl2", show_progress)

    class Reporter(Callback):
        """Progress bar, a metrics row every log_interval agent steps, and each finished game's score."""

        def __init__(self):
            super().__init__()
            self.steps = 0
            self.episodes = 0
            self.row_due = False

        # A row is sent at the start of the next step (or at the end of training), not in on_step_end:
        # a game that ends on this step, and the update keras-rl2 runs in the extra step after it, come
        # after on_step_end and belong in the row, as in the native loop.
        def on_step_begin(self, step, logs={}):  # noqa: B006  (keras-rl2's signature)
            if self.row_due:
                self.send_row()

        def on_step_end(self, step, logs={}):  # noqa: B006
            self.steps += 1
            bar.update(1)
            self.row_due = self.steps % config.log_interval == 0

        def on_train_end(self, logs=None):
            if self.row_due or self.steps > stats.start_step:
                self.send_row()

        def on_episode_end(self, episode, logs={}):  # noqa: B006
            score = env.last_game_score
            self.episodes += 1
            stats.returns.append(score)
            send({"type": "score", "step": self.steps, "score": score})
            bar.set_postfix(score=f"{score:.0f}", eps=f"{policy.inner_policy.eps:.2f}", refresh=False)

        def send_row(self):
            row = stats.row(self.steps, self.episodes, updates["count"], float(policy.inner_policy.eps))
            send({"type": "row", "step": self.steps, "row": row})
            self.row_due = False

    started = time.perf_counter()
    agent.fit(env, nb_steps=config.steps, verbose=0, callbacks=[Reporter()])
    wall_time = time.perf_counter() - started
    bar.close()
    env.close()
    weights = agent.model.get_weights()
    probe_q = agent.model.predict_on_batch(_probe_batch(spec))
    np.savez(output / _WEIGHTS, **{f"w{i:03d}": w for i, w in enumerate(weights)})
    np.save(output / _PROBE_Q, probe_q)
    return {"type": "done", "steps": int(agent.step), "updates": updates["count"], "wall_time_s": wall_time}


def _child_main(job_path: str, fd: str) -> int:
    channel = os.fdopen(int(fd), "w", buffering=1)

    def send(message: dict) -> None:
        channel.write(json.dumps(message) + "\n")

    try:
        job = json.loads(Path(job_path).read_text())
        params = build_params(job["params"])
        done = _train_in_child(params, Path(job["initial"]), Path(job["output"]), job["show_progress"], send)
        send(done)
        return 0
    except UserError as error:
        send({"type": "error", "message": str(error), "user_error": True})
        return 2
    except BaseException as error:
        traceback.print_exc()
        try:
            send({"type": "error", "message": f"{type(error).__name__}: {error}", "user_error": False})
        except OSError:  # the parent is gone
            pass
        return 1
    finally:
        try:
            channel.close()
        except OSError:
            pass


if __name__ == "__main__":
    code = _child_main(sys.argv[1], sys.argv[2])
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: everything is written, and tearing down TF and ale-py's bindings only
    # costs time and prints nanobind "leaked instance" noise.
    os._exit(code)
