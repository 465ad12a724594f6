"""The DQN targets and loss in TensorFlow, as small pure functions."""

from __future__ import annotations

import tensorflow as tf


def bootstrap_values(next_q_online: tf.Tensor, next_q_target: tf.Tensor, double_dqn: bool) -> tf.Tensor:
    """Value of the bootstrap state: Double DQN evaluates the online argmax with the target net."""
    if not double_dqn:
        return tf.reduce_max(next_q_target, axis=1)
    best = tf.argmax(next_q_online, axis=1, output_type=tf.int32)
    return tf.gather(next_q_target, best, axis=1, batch_dims=1)


def td_targets(returns: tf.Tensor, discounts: tf.Tensor, next_values: tf.Tensor) -> tf.Tensor:
    """``r + gamma^k * V(s')``, without gradient."""
    return tf.stop_gradient(returns + discounts * next_values)


def huber_loss(errors: tf.Tensor, delta: float = 1.0) -> tf.Tensor:
    """Mean Huber loss: quadratic within ``delta`` of zero, linear beyond (the 2015 DQN error clipping)."""
    absolute = tf.abs(errors)
    quadratic = tf.minimum(absolute, delta)
    return tf.reduce_mean(0.5 * tf.square(quadratic) + delta * (absolute - quadratic))
