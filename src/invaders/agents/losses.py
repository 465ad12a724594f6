"""The DQN targets and loss in TensorFlow, as small pure functions: the expected-value ones, and the
distributional ones of QR-DQN (Dabney et al. 2017), where each action has N quantiles of its return."""

from __future__ import annotations

import tensorflow as tf

from invaders.agents.dqn_math import quantile_midpoints


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


def quantile_q_values(quantiles: tf.Tensor) -> tf.Tensor:
    """Q-values of (batch, actions, N) quantiles: their mean over the N quantiles, (batch, actions)."""
    return tf.reduce_mean(quantiles, axis=-1)


def bootstrap_quantiles(
    next_quantiles_online: tf.Tensor, next_quantiles_target: tf.Tensor, double_dqn: bool
) -> tf.Tensor:
    """The target net's N quantiles, (batch, N), of the bootstrap state's chosen action: the argmax of the
    online net's quantile mean (Double DQN) or of the target net's (Dopamine's QR-DQN)."""
    chooser = next_quantiles_online if double_dqn else next_quantiles_target
    best = tf.argmax(quantile_q_values(chooser), axis=1, output_type=tf.int32)
    return tf.gather(next_quantiles_target, best, axis=1, batch_dims=1)


def quantile_td_targets(returns: tf.Tensor, discounts: tf.Tensor, next_quantiles: tf.Tensor) -> tf.Tensor:
    """``r + gamma^k * Z_j(s')`` for each of the N target quantiles j, (batch, N), without gradient; a
    terminal (discount 0) leaves N copies of the return."""
    return tf.stop_gradient(returns[:, None] + discounts[:, None] * next_quantiles)


def quantile_huber_loss(targets: tf.Tensor, quantiles: tf.Tensor, kappa: float = 1.0) -> tf.Tensor:
    """The quantile Huber loss (Dabney et al. 2017, eq. 10) of predicted ``quantiles`` (batch, N) against
    ``targets`` (batch, N'), averaged over the batch.

    With u_ij = target_j - quantile_i and tau_hat_i the midpoints (``quantile_midpoints``), each pair costs
    |tau_hat_i - 1{u_ij < 0}| * Huber_kappa(u_ij) / kappa; a sample's loss sums over i and averages over j,
    as Dopamine's QR-DQN (which does not divide by kappa: the same at kappa = 1, the paper's and its value).
    """
    errors = targets[:, None, :] - quantiles[:, :, None]  # (batch, N, N'): u_ij
    absolute = tf.abs(errors)
    huber = tf.where(absolute <= kappa, 0.5 * tf.square(errors), kappa * (absolute - 0.5 * kappa))
    taus = tf.constant(quantile_midpoints(quantiles.shape[1]))[None, :, None]
    weights = tf.abs(taus - tf.cast(errors < 0, errors.dtype))
    per_sample = tf.reduce_sum(tf.reduce_mean(weights * huber / kappa, axis=2), axis=1)
    return tf.reduce_mean(per_sample)
