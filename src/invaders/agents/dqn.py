"""The native TensorFlow DQN learner: online and target networks, the compiled update, batched acting.

The learner knows nothing of environments or logging: the training loop feeds it batches and reads
back numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf

from invaders.agents.losses import (
    bootstrap_quantiles,
    bootstrap_values,
    huber_loss,
    quantile_huber_loss,
    quantile_td_targets,
    td_targets,
)
from invaders.agents.policy import GreedyPolicy
from invaders.checkpoints import unprefixed
from invaders.config import TrainConfig
from invaders.hardware import update_path
from invaders.models.networks import quantile_view
from invaders.replay.frame_replay import Batch


class UpdateStats(NamedTuple):
    """What one gradient step reports: the loss and mean Q before the step, the TD target of each sample (with
    a quantile head, its N target quantiles: shape (batch, N)), and the greedy actions it was asked for
    (``update(act_on=...)``) under the updated network."""

    loss: float
    q_mean: float
    targets: np.ndarray
    greedy_actions: np.ndarray | None = None


class DQNLearner:
    """Double DQN with Huber loss, Adam, global-norm gradient clipping and hard target syncs.

    With ``quantiles`` N > 0 the networks have a quantile head (``NetworkSpec.quantiles``) and the learner is
    QR-DQN: N-quantile targets from the same n-step returns and (Double) DQN action choice, made on the
    quantiles' mean, and the quantile Huber loss (kappa 1). The networks' output, their Q-values, is the
    quantiles' mean, so acting is the same either way.

    The networks compute in their layers' precision (``build_q_network(precision=...)``); ``precision``
    names it, to compile the update and the acting the way that precision runs fastest (``xla`` overrides
    that choice, for benchmarks).
    """

    def __init__(
        self,
        online: tf.keras.Model,
        target: tf.keras.Model,
        config: TrainConfig,
        precision: str = "float32",
        xla: bool | None = None,
        quantiles: int = 0,
    ):
        import keras

        self.online = online
        self.target = target
        self.config = config
        self.quantiles = quantiles
        if quantiles:  # the same layers (weights), read at the quantiles
            self.online_quantiles, self.target_quantiles = quantile_view(online), quantile_view(target)
            if self.online_quantiles.output.shape[-1] != quantiles:
                raise ValueError(f"quantiles={quantiles}: the network has {self.online_quantiles.output.shape[-1]}")
        self.optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate, epsilon=config.adam_epsilon)
        self.optimizer.build(online.trainable_variables)
        xla = update_path(precision) == "xla" if xla is None else xla
        self.greedy_actions = GreedyPolicy(online, jit_compile=xla)
        self._update = tf.function(self._update_step, jit_compile=xla)
        self._update_and_act = tf.function(self._update_and_act_step, jit_compile=xla)
        self.updates = 0
        self.sync_target()

    def sync_target(self) -> None:
        self.target.set_weights(self.online.get_weights())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Networks, optimizer slots and update count, for checkpoints."""
        return {
            **{f"online.{i:03d}": weight for i, weight in enumerate(self.online.get_weights())},
            **{f"target.{i:03d}": weight for i, weight in enumerate(self.target.get_weights())},
            **{f"optimizer.{i:03d}": variable.numpy() for i, variable in enumerate(self.optimizer.variables)},
            "updates": np.asarray(self.updates),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        def ordered(prefix: str) -> list[np.ndarray]:
            part = unprefixed(prefix, state)
            return [part[key] for key in sorted(part)]

        self.online.set_weights(ordered("online"))
        self.target.set_weights(ordered("target"))
        for variable, value in zip(self.optimizer.variables, ordered("optimizer"), strict=True):
            variable.assign(value)
        self.updates = int(state["updates"])

    def update(self, batch: Batch, act_on: np.ndarray | None = None) -> UpdateStats:
        """One gradient step on ``batch``; syncs the target net on schedule.

        With ``act_on``, the same compiled call then picks the greedy actions for those observations with
        the updated network: the actions ``greedy_actions`` would give next, one call per vector step fewer
        (docs/speed.md: what it gains).
        """
        tensors = [
            tf.convert_to_tensor(field)
            for field in (batch.observations, batch.actions, batch.returns, batch.discounts, batch.next_observations)
        ]
        if act_on is None:
            (loss, q_mean, targets), actions = self._update(*tensors), None
        else:
            loss, q_mean, targets, actions = self._update_and_act(*tensors, tf.convert_to_tensor(act_on))
            actions = actions.numpy()
        self.updates += 1
        if self.updates % self.config.target_sync_updates == 0:
            self.sync_target()  # the actions above are the online network's: a sync does not change them
        return UpdateStats(float(loss), float(q_mean), targets.numpy(), actions)

    def _update_and_act_step(self, observations, actions, returns, discounts, next_observations, act_on):
        loss, q_mean, targets = self._update_step(observations, actions, returns, discounts, next_observations)
        # tf.function orders variable reads after the optimizer's writes above: the updated network acts.
        return loss, q_mean, targets, self.greedy_actions.actions_graph(act_on)

    def _update_step(self, observations, actions, returns, discounts, next_observations):
        if self.quantiles:
            return self._quantile_update_step(observations, actions, returns, discounts, next_observations)
        next_observations = tf.cast(next_observations, tf.float32)
        next_q_target = self.target(next_observations, training=False)
        next_q_online = self.online(next_observations, training=False) if self.config.double_dqn else next_q_target
        targets = td_targets(returns, discounts, bootstrap_values(next_q_online, next_q_target, self.config.double_dqn))
        with tf.GradientTape() as tape:
            q_values = self.online(tf.cast(observations, tf.float32), training=True)
            q_taken = tf.gather(q_values, actions, axis=1, batch_dims=1)
            loss = huber_loss(targets - q_taken)
        gradients = tape.gradient(loss, self.online.trainable_variables)
        gradients, _ = tf.clip_by_global_norm(gradients, self.config.max_grad_norm)
        self.optimizer.apply_gradients(zip(gradients, self.online.trainable_variables))
        return loss, tf.reduce_mean(q_taken), targets

    def _quantile_update_step(self, observations, actions, returns, discounts, next_observations):
        """QR-DQN's step: N target quantiles per sample, the quantile Huber loss on the taken action's quantiles."""
        next_observations = tf.cast(next_observations, tf.float32)
        next_target = self.target_quantiles(next_observations, training=False)
        double_dqn = self.config.double_dqn
        next_online = self.online_quantiles(next_observations, training=False) if double_dqn else next_target
        targets = quantile_td_targets(returns, discounts, bootstrap_quantiles(next_online, next_target, double_dqn))
        with tf.GradientTape() as tape:
            quantiles = self.online_quantiles(tf.cast(observations, tf.float32), training=True)
            taken = tf.gather(quantiles, actions, axis=1, batch_dims=1)  # (batch, N)
            loss = quantile_huber_loss(targets, taken)
        gradients = tape.gradient(loss, self.online.trainable_variables)
        gradients, _ = tf.clip_by_global_norm(gradients, self.config.max_grad_norm)
        self.optimizer.apply_gradients(zip(gradients, self.online.trainable_variables))
        return loss, tf.reduce_mean(taken), targets
