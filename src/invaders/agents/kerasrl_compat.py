"""Every fix keras-rl2 1.0.5 needs to run on TensorFlow 2.21, tf_keras 2.21, numpy 2 and gymnasium 1.x.

keras-rl2's last release (2021) targets TensorFlow 2.1 and the old gym API. ``apply()`` makes it work
here without editing the installed package; each fix below carries a comment saying what breaks and why.

Process-wide side effects: ``apply()`` sets ``TF_USE_LEGACY_KERAS=1`` before TensorFlow is imported and
imports ``rl.agents``, which switches the whole process to TF1 graph mode. Call it only in a process
made for keras-rl2 (``kerasrl_backend`` runs one as a subprocess); a process that already imported
TensorFlow with Keras 3 is refused rather than half-patched.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import types
import warnings

import numpy as np

_applied = False


class _WideCounterNumpy(types.ModuleType):
    """numpy as seen by ``rl/core.py``: everything is numpy's, except ``int16`` is Python's ``int``."""

    int16 = int  # a type, not a function: attribute access returns it unbound

    def __init__(self) -> None:
        super().__init__("numpy")

    def __getattr__(self, name: str):
        return getattr(np, name)


def _sample_batch_indexes(low: int, high: int, size: int):
    """``rl.memory.sample_batch_indexes`` with ``np.random.random_integers`` replaced by ``randint``."""
    if high - low >= size:
        return random.sample(range(low, high), size)
    warnings.warn(
        "Not enough entries to sample without replacement. "
        "Consider increasing your warm-up phase to avoid oversampling!",
        stacklevel=2,
    )
    # random_integers(low, high - 1) drew from the closed interval; randint's upper bound is exclusive.
    return np.random.randint(low, high, size=size)


def _process_state_batch(self, batch):
    """``AbstractDQNAgent.process_state_batch`` building a float32 array instead of an object array."""
    batch = np.array(batch, dtype=np.float32)
    if self.processor is None:
        return batch
    return self.processor.process_state_batch(batch)


def apply() -> None:
    """Install all fixes (idempotent). Must run before anything in this process imports TensorFlow."""
    global _applied
    if _applied:
        return

    # Fix 1: keras-rl2 imports `tensorflow.keras.models.model_from_config` and other Keras 2 APIs that
    # Keras 3 (TF 2.16+'s default `tf.keras`) removed, so it cannot even be imported there. With
    # TF_USE_LEGACY_KERAS=1, `tensorflow.keras` resolves to the tf_keras package (Keras 2.21). TensorFlow
    # reads the variable once, when `tf.keras` is first resolved: it must be set before TF is imported.
    if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
        raise RuntimeError(
            "kerasrl_compat.apply() must run before TensorFlow is imported (it needs TF_USE_LEGACY_KERAS=1); "
            "run keras-rl2 in its own process"
        )
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow.keras as keras_api  # noqa: F401  (tf_keras' API module, thanks to fix 1)
    import tf_keras

    # Fix 2: rl/callbacks.py does `from tensorflow.keras import __version__`; tf_keras' public API module
    # (tf_keras/api/_v2/keras) defines no `__version__`, so importing keras-rl2 fails with ImportError.
    if not hasattr(keras_api, "__version__"):
        keras_api.__version__ = tf_keras.__version__

    # Fix 3: importing `rl.agents` imports rl/agents/ddpg.py, which calls
    # `tf.compat.v1.disable_eager_execution()` for the whole process. Do it here, once, on purpose, so
    # the switch happens before any model exists (a model built in eager mode and then used in graph
    # mode fails). In graph mode tf_keras trains through `optimizer.get_updates`, which only the
    # optimizers in `tf_keras.optimizers.legacy` have: use `legacy_adam()` below, not `tf_keras.optimizers.Adam`.
    import rl.agents  # noqa: F401
    import rl.agents.dqn
    import rl.core
    import rl.memory
    import rl.util

    # Fix 4: `DQNAgent.compile` makes the target network with `rl.util.clone_model`, which round-trips the
    # model through `model_from_config`. The dueling head keras-rl2 adds is a `Lambda` wrapping a Python
    # lambda, and tf_keras' safe mode refuses to deserialise those (ValueError). The config comes from
    # keras-rl2's own in-memory model, never from a file, so turn safe mode off for that call only.
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    original_clone_model = rl.util.clone_model

    def clone_model(model, custom_objects={}):  # noqa: B006  (same signature as keras-rl2's)
        with SafeModeScope(False):
            return original_clone_model(model, custom_objects)

    rl.util.clone_model = clone_model
    rl.agents.dqn.clone_model = clone_model  # dqn.py did `from rl.util import *`: patch its own name too

    # Fix 5: `Agent.fit` in rl/core.py keeps `self.step`, `episode` and `episode_step` as `np.int16`.
    # Under numpy 2's promotion rules (NEP 50) `np.int16 + 1` stays int16 and wraps to -32768 after
    # 32,767, so `while self.step < nb_steps` never ends for nb_steps > 32,767, and
    # `self.step % target_model_update` raises OverflowError once target_model_update > 32,767. Give
    # rl/core.py a numpy whose `int16` is Python's unbounded `int`; nothing else in that module uses int16.
    rl.core.np = _WideCounterNumpy()

    # Fix 6: `AbstractDQNAgent.process_state_batch` does `np.array(batch, dtype=object)`, which turns every
    # pixel of the batch into a Python object; TF then converts that back element by element, which cost
    # more than the whole training step (docs/notebook.md). A float32 array of the same shape is what the
    # network takes.
    rl.agents.dqn.AbstractDQNAgent.process_state_batch = _process_state_batch

    # Fix 7: `rl.memory.sample_batch_indexes` falls back to `np.random.random_integers` (removed in
    # numpy 2) when the memory holds fewer transitions than one batch (e.g. a warm-up shorter than the
    # batch size): AttributeError. `SequentialMemory.sample` looks the function up as a module global.
    rl.memory.sample_batch_indexes = _sample_batch_indexes

    # Fix 8 is `GymnasiumAdapter` below: keras-rl2 speaks the old gym API, gymnasium the new one.
    _applied = True


def legacy_adam(learning_rate: float, epsilon: float, global_clipnorm: float | None = None):
    """The Adam that works in keras-rl2's graph mode (fix 3): it has `get_updates`."""
    import tf_keras

    return tf_keras.optimizers.legacy.Adam(
        learning_rate=learning_rate, epsilon=epsilon, global_clipnorm=global_clipnorm
    )


def cache_target_q(agent) -> None:
    """Speed-up, not a fix: compute the target network's Q-values of each next state once per target sync.

    keras-rl2's ``DQNAgent.backward`` predicts the target network on all 32 next states of every batch,
    although the target network only changes at a hard sync (every ``target_model_update`` steps) and the
    replay memory holds few states (``limit``): with the notebook's memory of 1000 each state is sampled ~32
    times in its life, and recomputed each time (docs/notebook.md: that predict's share of a step).
    This keeps each next state's target Q-values, keyed by a BLAKE2b digest of its frames, and forgets them
    all when ``update_target_model_hard`` runs. Same network, same inputs: the values keras-rl2 computes, up to
    the float32 rounding of a smaller batch (tests/test_kerasrl.py). Soft target updates (``target_model_update < 1``)
    change the target network every step: then nothing is installed.
    """
    if agent.target_model_update < 1:
        return
    cache: dict[bytes, np.ndarray] = {}
    limit = 8 * max(agent.memory.limit, agent.batch_size)  # entries: stale states beyond this are dropped
    pending = {"array": None, "states": None}
    process_state_batch = agent.process_state_batch
    predict = agent.target_model.predict_on_batch
    update_target_model_hard = agent.update_target_model_hard

    def remembering_process_state_batch(batch):
        array = process_state_batch(batch)
        pending["array"], pending["states"] = array, batch  # the states of the array the target may predict
        return array

    def digest(state) -> bytes:
        hasher = hashlib.blake2b(digest_size=16)
        for frame in state:
            frame = np.ascontiguousarray(frame)
            hasher.update(str((frame.shape, frame.dtype.str)).encode())
            hasher.update(frame.data)
        return hasher.digest()

    def cached_predict(array):
        if array is not pending["array"]:  # not a batch built by process_state_batch: nothing to key it by
            return predict(array)
        keys = [digest(state) for state in pending["states"]]
        missing = [i for i, key in enumerate(keys) if key not in cache]
        if missing:
            if len(cache) + len(missing) > limit:
                cache.clear()
                missing = list(range(len(keys)))
            computed = predict(array if len(missing) == len(keys) else array[missing])
            for i, row in zip(missing, computed, strict=True):
                cache[keys[i]] = row
        return np.stack([cache[key] for key in keys])

    def clearing_update_target_model_hard():
        cache.clear()
        update_target_model_hard()

    agent.process_state_batch = remembering_process_state_batch
    agent.target_model.predict_on_batch = cached_predict
    agent.update_target_model_hard = clearing_update_target_model_hard


class GymnasiumAdapter:
    """A gymnasium env behind the old gym API that keras-rl2's ``fit`` calls.

    Fix 8: keras-rl2 expects ``reset() -> observation`` and ``step(a) -> (obs, reward, done, info)``;
    gymnasium returns ``(obs, info)`` and ``(obs, reward, terminated, truncated, info)``, so keras-rl2
    would store tuples as observations. ``done`` is ``terminated or truncated`` (keras-rl2 has no
    notion of truncation: a game cut by the frame cap is learned as terminal). The first reset is
    seeded; later resets continue the env's random stream.

    It also keeps the unclipped game score, whatever a keras-rl2 ``Processor`` does to rewards:
    ``game_score`` is the running score of the current game, ``last_game_score`` the score of the
    last finished one.
    """

    def __init__(self, env, seed: int | None = None):
        self.env = env
        self.action_space = env.action_space
        self.observation_space = env.observation_space
        self.reward_range = getattr(env, "reward_range", (-np.inf, np.inf))
        self._seed = seed
        self.game_score = 0.0
        self.last_game_score: float | None = None

    def reset(self):
        observation, _ = self.env.reset(seed=self._seed)
        self._seed = None
        self.game_score = 0.0
        return observation

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(int(action))
        self.game_score += float(reward)
        done = bool(terminated or truncated)
        if done:
            self.last_game_score = self.game_score
        return observation, float(reward), done, info

    def render(self, mode: str = "human", close: bool = False):
        return self.env.render()

    def close(self) -> None:
        self.env.close()

    def seed(self, seed: int | None = None):
        self._seed = seed
        return [seed]
