"""The keras-rl2 backend: real ``DQNAgent.fit`` in a child process, its numpy-2 fixes, the raw-frame env."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from invaders.backends import TrainingJob
from invaders.config import ConfigError, EnvConfig, build_params
from invaders.envs.atari import make_vector_env, num_actions, observation_shape
from invaders.models.networks import NetworkSpec, build_q_network, save_weights
from invaders.seeding import run_seeds

REPO = Path(__file__).resolve().parents[1]
TRAIN_STEPS, WARMUP, LOG_INTERVAL = 400, 100, 100


def make_params(env: dict | None = None, model: dict | None = None, train: dict | None = None):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["env"].update(env or {})
    raw["model"].update(model or {})
    raw["train"].update({"backend": "keras-rl2", **(train or {})})
    return build_params(raw)


def save_initial(params, directory: Path, head: str | None = None):
    import keras

    spec = NetworkSpec(
        params.model.network, params.model.dueling, observation_shape(params.env), num_actions(params.env), head
    )
    keras.utils.set_random_seed(run_seeds(params.train.seed).weights)
    model = build_q_network(spec)
    save_weights(model, spec, directory)
    return model, spec


# The Nature network's two streams come built in keras-rl2's model; keras-rl2's own head (the notebook
# preset's) is added by keras-rl2 to the plain network.
@pytest.fixture(scope="module", params=["dueling-streams", "dueling-shared"])
def trained(tmp_path_factory, request):
    """One small keras-rl2 run on the deepmind setup (Nature network) per dueling head, shared by the tests below."""
    params = make_params(
        env={"max_episode_frames": 400},  # 100 agent steps per game: several whole games in the run
        train={
            "steps": TRAIN_STEPS,
            "warmup_fraction": WARMUP / TRAIN_STEPS,
            "replay_capacity": 2_000,
            "replay_ratio": 0.25,
            "log_interval": LOG_INTERVAL,
            "target_sync_updates": 25,  # every 100 agent steps
        },
    )
    initial = tmp_path_factory.mktemp("initial")
    initial_model, spec = save_initial(params, initial, request.param)
    logged = []
    from invaders.agents.kerasrl_backend import train

    agent = train(TrainingJob(params, initial, lambda m, s: logged.append((s, m)), show_progress=False))
    model, trained_spec, result = agent.model, agent.spec, agent.result
    return params, initial_model, spec, model, trained_spec, result, logged


def test_kerasrl_backend_trains_the_nature_network(trained):
    from invaders.agents.interval_stats import IntervalStats

    params, initial_model, spec, model, trained_spec, result, logged = trained
    assert trained_spec == spec  # the saved head, kept
    assert model.input_shape == (None, 4, 84, 84) and model.output_shape == (None, 6)
    for before, after in zip(initial_model.get_weights(), model.get_weights(), strict=True):
        assert before.shape == after.shape
        assert not np.array_equal(before, after)
    assert result.steps == TRAIN_STEPS
    # One update every 4 steps after the warm-up (keras-rl2 may add one in the extra step after a game ends).
    assert (
        (TRAIN_STEPS - WARMUP) // 4 <= result.updates <= (TRAIN_STEPS - WARMUP) // 4 + len(result.episode_returns) + 1
    )

    native_keys = {"step", *IntervalStats().row(1, 0, 0, 1.0)}
    assert [row["step"] for row in result.curve] == list(range(LOG_INTERVAL, TRAIN_STEPS + 1, LOG_INTERVAL))
    assert all(set(row) == native_keys for row in result.curve)
    last = result.curve[-1]
    assert last["train/updates"] == result.updates and math.isfinite(last["train/loss"])
    assert last["train/episodes"] == len(result.episode_returns)
    assert 0.0 < last["train/epsilon"] < 1.0

    # Whole games (400 frames = 100 agent steps each) with unclipped scores: Space Invaders pays 5-30 a kill.
    scores = result.episode_returns
    assert len(scores) >= 3
    assert all(score == int(score) and score % 5 == 0 for score in scores)
    assert max(scores) > 0
    assert [m["train/game_score"] for _, m in logged if "train/game_score" in m] == scores
    rows_logged = [(s, m) for s, m in logged if "train/loss" in m or "train/epsilon" in m]
    assert [s for s, _ in rows_logged] == [row["step"] for row in result.curve]


def test_kerasrl_side_effects_stay_in_the_child(trained):
    import keras
    import tensorflow as tf

    assert tf.executing_eagerly()
    assert "rl" not in sys.modules and "rl.agents" not in sys.modules
    assert os.environ.get("TF_USE_LEGACY_KERAS") != "1"
    assert keras.__version__.startswith("3.")
    model = trained[3]
    assert model(np.zeros((1, 4, 84, 84), np.float32)).shape == (1, 6)  # the returned Keras 3 model runs eagerly


def test_network_that_does_not_fit_is_a_config_error_before_training(tmp_path):
    params = make_params(
        env={"id": "SpaceInvaders-v0", "preprocessing": "raw"},
        model={"network": "notebook"},
        train={"memory_window": 3, "steps": 100, "warmup_fraction": 0.01, "replay_capacity": 100},
    )
    spec = NetworkSpec("notebook", True, (4, *observation_shape(params.env)[1:]), 6)
    (tmp_path / "spec.json").write_text(spec.to_json())  # the check runs before any weights are read
    from invaders.agents.kerasrl_backend import train

    with pytest.raises(ConfigError, match="train.memory_window = 3: the network .* takes states of 4 frames"):
        train(TrainingJob(params, tmp_path, lambda m, s: None, show_progress=False))


# Runs in its own interpreter: keras-rl2 switches the process to graph mode.
_COUNTER_SCRIPT = r"""
import json, warnings
import numpy as np
from invaders.agents import kerasrl_compat

kerasrl_compat.apply()
import gymnasium
import tf_keras
import rl.memory
from rl.agents.dqn import DQNAgent
from rl.callbacks import Callback
from rl.core import Processor
from rl.memory import SequentialMemory
from rl.policy import EpsGreedyQPolicy

class Game(gymnasium.Env):
    observation_space = gymnasium.spaces.Box(0.0, 1.0, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}
    def step(self, action):
        self.t += 1
        return np.full(2, self.t / 5, np.float32), 2.0, self.t == 5, False, {"lives": 1}

class Clip(Processor):
    def process_reward(self, reward):
        return float(np.sign(reward))

START, END = 32_760, 32_790
class JumpAhead(Callback):
    # Put fit's own step counter (keeping the type fit gave it) just below int16's maximum.
    def on_step_begin(self, step, logs={}):
        if self.model.step == 0:
            self.model.step = type(self.model.step)(START)

layers = tf_keras.layers
model = tf_keras.Sequential([tf_keras.Input((1, 2)), layers.Flatten(), layers.Dense(8, "relu"), layers.Dense(2)])
agent = DQNAgent(
    model=model, nb_actions=2, memory=SequentialMemory(limit=100, window_length=1), policy=EpsGreedyQPolicy(),
    batch_size=16, nb_steps_warmup=START + 5, target_model_update=40_000, enable_dueling_network=True, processor=Clip(),
)
agent.compile(kerasrl_compat.legacy_adam(1e-3, 1e-7))
env = kerasrl_compat.GymnasiumAdapter(Game(), seed=0)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    agent.fit(env, nb_steps=END, verbose=0, callbacks=[JumpAhead()])
batch = agent.process_state_batch([[np.zeros(2, np.uint8)], [np.ones(2)]])
print(json.dumps({
    "step": agent.step,
    "step_type": type(agent.step).__name__,
    "last_game_score": env.last_game_score,
    "memory_rewards": sorted({float(r) for r in agent.memory.rewards}),
    "oversampled": any("Not enough entries" in str(w.message) for w in caught),
    "indexes": len(rl.memory.sample_batch_indexes(0, 3, 10)),
    "batch_dtype": str(batch.dtype),
    "batch_shape": list(batch.shape),
}))
"""


def test_int16_step_counter_fix_lets_fit_run_past_32767():
    with np.errstate(over="ignore"):
        assert np.int16(32_767) + 1 == -32_768  # numpy 2 keeps int16: keras-rl2's unpatched counter wraps here
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", _COUNTER_SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # fit ran from 32,760 to 32,790 and stopped: no wrap, and `step % 40_000` raised no OverflowError.
    assert report["step"] == 32_790 and report["step_type"] == "int"
    assert report["last_game_score"] == 10.0  # 5 rewards of 2: the adapter's score is unclipped ...
    assert report["memory_rewards"] == [0.0, 1.0]  # ... while the memory learned from clipped rewards
    assert report["oversampled"] and report["indexes"] == 10  # fix 7: sampling more than memory holds
    assert report["batch_dtype"] == "float32" and report["batch_shape"] == [2, 1, 2]  # fix 6


def test_raw_vector_env_windows_of_three_frames_with_next_step_autoreset():
    config = EnvConfig(id="ALE/SpaceInvaders-v5", preprocessing="raw", max_episode_frames=60)  # 15 steps a game
    env = make_vector_env(config, 2)
    assert env.num_envs == 2 and env.single_action_space.n == 6
    observations, info = env.reset(seed=7)
    assert observations.shape == (2, 3, 210, 160, 3) and observations.dtype == np.uint8
    assert (observations[:, :2] == 0).all() and (observations[:, 2] > 0).any(axis=(1, 2, 3)).all()
    assert list(info["lives"]) == [3, 3]

    previous = observations
    observations, rewards, terminated, truncated, info = env.step(np.array([1, 1]))
    assert (observations[:, 0] == 0).all() and np.array_equal(observations[:, 1], previous[:, 2])
    steps = 1
    while not (terminated | truncated).all():
        assert not (terminated | truncated).any()  # v5 is deterministic in frames: both games stop together
        observations, rewards, terminated, truncated, info = env.step(np.array([1, 1]))
        steps += 1
    assert truncated.all() and steps == 15 and (info["episode_frame_number"] >= 60).all()
    # Next-step autoreset: the action is ignored, reward 0, a new game's zero-padded first window.
    observations, rewards, terminated, truncated, info = env.step(np.array([1, 1]))
    assert (rewards == 0).all() and not (terminated | truncated).any()
    assert (observations[:, :2] == 0).all() and (observations[:, 2] > 0).any(axis=(1, 2, 3)).all()
    assert list(info["lives"]) == [3, 3] and list(info["episode_frame_number"]) == [0, 0]
    env.close()


def test_raw_vector_env_plays_the_evaluation_protocol():
    from invaders.evaluation.protocol import play_episodes

    env = make_vector_env(EnvConfig(id="SpaceInvaders-v0", preprocessing="raw", max_episode_frames=200), 2)
    rng = np.random.default_rng(0)
    episodes = play_episodes(env, lambda obs: rng.integers(0, 6, len(obs)), 3, first_seed=1, show_progress=False)
    assert len(episodes) == 3 and all(e.truncated and e.frames >= 200 - 4 for e in episodes)
    assert all(e.score == int(e.score) for e in episodes)
    env.close()


_TARGET_CACHE_SCRIPT = """
import json
import numpy as np
from invaders.agents import kerasrl_compat
kerasrl_compat.apply()
import tf_keras
from rl.agents.dqn import DQNAgent
from rl.memory import SequentialMemory
from rl.policy import EpsGreedyQPolicy

class Game:
    # A few distinct frames, games of 7 steps: next states recur in the memory, as in the notebook's run.
    action_space = type("Space", (), {"n": 3})()
    observation_space = type("Space", (), {"shape": (4, 4, 3)})()
    def reset(self, seed=None):
        self.t = 0
        return self.frame(), {}
    def frame(self):
        return np.full((4, 4, 3), 40 * (self.t % 5), np.uint8)
    def step(self, action):
        self.t += 1
        return self.frame(), float(action == self.t % 3), self.t == 7, False, {}

def run(cached):
    tf_keras.utils.set_random_seed(0)
    layers = tf_keras.layers
    model = tf_keras.Sequential([
        tf_keras.Input((2, 4, 4, 3)), layers.Rescaling(1 / 255), layers.TimeDistributed(layers.Conv2D(4, 2)),
        layers.Flatten(), layers.Dense(16, "relu"), layers.Dense(3),
    ])
    agent = DQNAgent(
        model=model, nb_actions=3, memory=SequentialMemory(limit=60, window_length=2), policy=EpsGreedyQPolicy(0.3),
        batch_size=8, nb_steps_warmup=20, target_model_update=50, enable_dueling_network=True,
    )
    agent.compile(kerasrl_compat.legacy_adam(1e-2, 1e-7))
    rows = []
    predict = agent.target_model.predict_on_batch
    agent.target_model.predict_on_batch = lambda x: rows.append(len(x)) or predict(x)
    if cached:
        kerasrl_compat.cache_target_q(agent)
    agent.fit(kerasrl_compat.GymnasiumAdapter(Game(), seed=0), nb_steps=300, verbose=0)
    return agent.model.get_weights(), sum(rows), len(rows)

plain, plain_rows, plain_calls = run(False)
cached, cached_rows, cached_calls = run(True)
print(json.dumps({
    "largest_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(plain, cached)),
    "plain_rows": plain_rows, "plain_calls": plain_calls, "cached_rows": cached_rows, "cached_calls": cached_calls,
}))
"""


def test_target_q_cache_trains_the_same_weights_with_fewer_target_predicts():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", _TARGET_CACHE_SCRIPT], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # 280 updates of 8 next states each; the cache computes each distinct state once per target sync.
    assert report["plain_calls"] == report["plain_rows"] // 8 and report["plain_rows"] >= 280 * 8
    assert report["cached_rows"] < report["plain_rows"] // 4
    # The same targets up to float32 rounding: the cache predicts only the states it lacks, a smaller batch, and
    # a CPU's kernels may round a row differently by batch size (bit for bit on AVX-512, not on AVX2).
    assert report["largest_difference"] < 1e-4


# Runs in its own interpreter (graph mode): the backend's training, every target sync and update counted.
_TARGET_SYNC_SCRIPT = """
import json, sys
from pathlib import Path
from invaders.agents import kerasrl_compat
kerasrl_compat.apply()
from rl.agents.dqn import DQNAgent
from invaders.agents.kerasrl_backend import _train_in_child
from invaders.config import build_params

updates, syncs = [0], []
update_target_model_hard = DQNAgent.update_target_model_hard

def counted_sync(self):
    if not syncs:  # the first sync comes at step 0, before any update: count them from here
        train_on_batch = self.trainable_model.train_on_batch
        def counted_train_on_batch(*args, **kwargs):
            updates[0] += 1
            return train_on_batch(*args, **kwargs)
        self.trainable_model.train_on_batch = counted_train_on_batch
    syncs.append(updates[0])
    update_target_model_hard(self)

DQNAgent.update_target_model_hard = counted_sync
params = build_params(json.loads(Path(sys.argv[1]).read_text()))
done = _train_in_child(params, Path(sys.argv[2]), Path(sys.argv[2]), False, lambda message: None)
print(json.dumps({"updates": done["updates"], "syncs_at_updates": syncs}))
"""


def test_kerasrl_syncs_its_target_network_every_target_sync_updates_updates(tmp_path):
    import dataclasses

    # 240 agent steps, no game ends (a random game lasts longer): an update every 4 steps after 40 of warm-up.
    params = make_params(
        train={
            "steps": 240,
            "warmup_fraction": 40 / 240,
            "replay_capacity": 500,
            "replay_ratio": 0.25,
            "target_sync_updates": 10,
        }
    )
    save_initial(params, tmp_path)
    (tmp_path / "params.json").write_text(json.dumps(dataclasses.asdict(params)))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", _TARGET_SYNC_SCRIPT, str(tmp_path / "params.json"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["updates"] == len(range(44, 240, 4))  # keras-rl2 counts steps from 0 and trains after step 40
    # keras-rl2 copies every target_model_update agent steps from step 0, warm-up included: 10 updates x 4 steps
    assert report["syncs_at_updates"] == [0, 0, 10, 20, 30, 40], "a sync every 10 updates, not every 10 agent steps"
