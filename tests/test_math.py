import numpy as np
import pytest
import tensorflow as tf

from invaders.agents.dqn_math import epsilon_greedy, linear_epsilon, quantile_midpoints
from invaders.agents.interval_stats import IntervalStats
from invaders.agents.losses import (
    bootstrap_quantiles,
    bootstrap_values,
    huber_loss,
    quantile_huber_loss,
    quantile_q_values,
    quantile_td_targets,
    td_targets,
)
from invaders.agents.training import exploration_epsilon, updates_due
from invaders.config import TrainConfig
from invaders.evaluation.statistics import bootstrap_ci, summarize
from invaders.replay.n_step import n_step_returns

GAMMA = 0.9


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1.0), (50, 0.55), (100, 0.1), (1_000, 0.1), (-5, 1.0)],
)
def test_linear_epsilon(step, expected):
    assert linear_epsilon(step, 1.0, 0.1, 100) == pytest.approx(expected)


def test_exploration_is_uniform_during_warmup_then_anneals():
    config = TrainConfig(steps=1_000, warmup_fraction=0.1, epsilon_start=0.5, epsilon_end=0.1, exploration_fraction=0.1)
    assert exploration_epsilon(99, config) == 1.0
    assert exploration_epsilon(100, config) == pytest.approx(0.5)
    assert exploration_epsilon(150, config) == pytest.approx(0.3)
    assert exploration_epsilon(10_000, config) == pytest.approx(0.1)


def test_updates_follow_the_replay_ratio_after_warmup():
    config = TrainConfig(steps=1_000, warmup_fraction=0.1, replay_ratio=0.25)
    assert [updates_due(step, config) for step in (0, 100, 103, 104, 200)] == [0, 0, 0, 1, 25]


def _returns(rewards, terminals, finals, gamma=GAMMA):
    return n_step_returns(np.array([rewards], dtype=np.float32), np.array([terminals]), np.array([finals]), gamma)


def test_n_step_without_episode_end_bootstraps_after_n():
    returns, discount, offset = _returns([1, 2, 3], [False] * 3, [False] * 3)
    assert returns[0] == pytest.approx(1 + GAMMA * 2 + GAMMA**2 * 3)
    assert discount[0] == pytest.approx(GAMMA**3)
    assert offset[0] == 3


def test_n_step_stops_at_terminal_without_bootstrap():
    returns, discount, offset = _returns([1, 2, 3], [False, True, False], [False, True, False])
    assert returns[0] == pytest.approx(1 + GAMMA * 2)
    assert discount[0] == 0.0
    assert offset[0] == 2


def test_n_step_bootstraps_on_truncation():
    returns, discount, offset = _returns([1, 2, 3], [False] * 3, [True, False, False])
    assert returns[0] == pytest.approx(1)
    assert discount[0] == pytest.approx(GAMMA)
    assert offset[0] == 1


def test_one_step_is_classic_dqn():
    returns, discount, offset = _returns([5], [False], [False])
    assert (returns[0], discount[0], offset[0]) == (5, pytest.approx(GAMMA), 1)
    _, discount, _ = _returns([5], [True], [True])
    assert discount[0] == 0.0


def test_double_dqn_values_online_argmax_with_target():
    online = tf.constant([[1.0, 5.0, 2.0]])
    target = tf.constant([[10.0, 3.0, 7.0]])
    assert bootstrap_values(online, target, double_dqn=True).numpy()[0] == 3.0
    assert bootstrap_values(online, target, double_dqn=False).numpy()[0] == 10.0
    target_value = td_targets(tf.constant([1.0]), tf.constant([0.5]), tf.constant([4.0]))
    assert target_value.numpy()[0] == 3.0


def test_huber_is_quadratic_near_zero_and_linear_beyond():
    assert huber_loss(tf.constant([0.5])).numpy() == pytest.approx(0.125)
    assert huber_loss(tf.constant([-3.0])).numpy() == pytest.approx(2.5)


def test_quantile_midpoints_are_the_centres_of_n_equal_bins():
    np.testing.assert_array_equal(quantile_midpoints(4), [0.125, 0.375, 0.625, 0.875])
    np.testing.assert_array_equal(quantile_midpoints(1), [0.5])
    assert quantile_midpoints(200).dtype == np.float32 and quantile_midpoints(200)[-1] == np.float32(399 / 400)


def test_quantile_huber_loss_of_a_hand_worked_example():
    """Quantiles theta = (0, 2) at tau_hat = (0.25, 0.75) against targets (0.5, 4); u_ij = target_j - theta_i.
    i=0: u = (0.5, 4): Huber (0.125, 3.5), both u >= 0 so weight tau = 0.25: mean (0.03125 + 0.875) / 2 = 0.453125.
    i=1: u = (-1.5, 2): Huber (1.0, 1.5), weights |0.75 - 1| = 0.25 and 0.75: mean (0.25 + 1.125) / 2 = 0.6875.
    The sample's loss sums over i: 1.140625; a second sample on its targets costs 0: the batch mean halves it."""
    theta, targets = tf.constant([[0.0, 2.0]]), tf.constant([[0.5, 4.0]])
    assert quantile_huber_loss(targets, theta).numpy() == pytest.approx(1.140625)
    batch = quantile_huber_loss(tf.constant([[0.5, 4.0], [1.0, 1.0]]), tf.constant([[0.0, 2.0], [1.0, 1.0]]))
    assert batch.numpy() == pytest.approx(1.140625 / 2)
    # One quantile (tau 0.5) 3 above its target: Huber's linear part, 3 - 0.5, at weight |0.5 - 1|.
    assert quantile_huber_loss(tf.constant([[-3.0]]), tf.constant([[0.0]])).numpy() == pytest.approx(0.5 * 2.5)


def test_quantile_targets_take_the_online_means_argmax_valued_by_the_target_quantiles():
    # One state, 3 actions of 2 quantiles. Online means (1, 5, 1): action 1; target means (10, 3, 7): action 0.
    online = tf.constant([[[0.0, 2.0], [4.0, 6.0], [1.0, 1.0]]])
    target = tf.constant([[[8.0, 12.0], [1.0, 5.0], [6.0, 8.0]]])
    np.testing.assert_array_equal(quantile_q_values(online).numpy(), [[1.0, 5.0, 1.0]])
    np.testing.assert_array_equal(bootstrap_quantiles(online, target, double_dqn=True).numpy(), [[1.0, 5.0]])
    np.testing.assert_array_equal(bootstrap_quantiles(online, target, double_dqn=False).numpy(), [[8.0, 12.0]])
    # n-step: r + gamma^k Z_j(s') per quantile; a terminal (discount 0) leaves the return in every quantile.
    next_quantiles = tf.constant([[1.0, 5.0], [7.0, 9.0]])
    targets = quantile_td_targets(tf.constant([1.0, 2.0]), tf.constant([0.25, 0.0]), next_quantiles)
    np.testing.assert_array_equal(targets.numpy(), [[1.25, 2.25], [2.0, 2.0]])


def test_quantile_choice_is_by_the_mean_not_the_median_or_the_best_quantile():
    # Action 0: (0, 0, 9), mean 3, median 0; action 1: (2, 2, 2), mean 2; action 2: (-9, 1, 10), mean 2/3.
    quantiles = tf.constant([[[0.0, 0.0, 9.0], [2.0, 2.0, 2.0], [-9.0, 1.0, 10.0]]])
    np.testing.assert_array_equal(bootstrap_quantiles(quantiles, quantiles, double_dqn=True).numpy(), [[0.0, 0.0, 9.0]])


def test_epsilon_greedy_extremes():
    rng = np.random.default_rng(0)
    greedy = np.full(1_000, 2)
    assert (epsilon_greedy(greedy, 0.0, 6, rng) == 2).all()
    random_actions = epsilon_greedy(greedy, 1.0, 6, rng)
    assert set(random_actions) == set(range(6))


def test_summary_and_bootstrap_interval():
    scores = np.array([100.0, 200.0, 300.0, 400.0])
    summary = summarize(scores)
    assert summary == {
        "mean": 250.0,
        "std": pytest.approx(111.803, rel=1e-4),
        "median": 250.0,
        "min": 100.0,
        "max": 400.0,
        "episodes": 4,
    }
    low, high = bootstrap_ci(scores, 0.95, 2_000)
    assert 100.0 <= low < 250.0 < high <= 400.0


def test_interval_row_averages_since_the_last_row_and_leaves_nan_where_nothing_happened():
    stats = IntervalStats(start_step=100)
    stats.losses += [1.0, 3.0]
    stats.returns.append(50.0)
    row = stats.row(step=200, episodes=7, updates=25, epsilon=0.5)
    assert row["train/loss"] == 2.0 and row["train/episode_return"] == 50.0 and np.isnan(row["train/q_mean"])
    assert row["train/episodes"] == 7 and row["train/updates"] == 25 and row["train/steps_per_second"] > 0
    empty = stats.row(step=300, episodes=7, updates=25, epsilon=0.5)
    assert np.isnan(empty["train/loss"]) and np.isnan(empty["train/episode_return"])


def test_n_step_truncation_later_in_the_window_bootstraps_with_gamma_to_its_distance():
    returns, discount, offset = _returns([1, 2, 3], [False] * 3, [False, True, False])
    assert returns[0] == pytest.approx(1 + GAMMA * 2)
    assert discount[0] == pytest.approx(GAMMA**2)
    assert offset[0] == 2


def test_epsilon_greedy_tosses_a_coin_per_state_and_returns_int32():
    rng = np.random.default_rng(1)
    actions = epsilon_greedy(np.full(10_000, 2), 0.5, 6, rng)
    assert actions.dtype == np.int32
    changed = np.mean(actions != 2)  # a random action differs from the greedy one 5 times in 6
    assert changed == pytest.approx(0.5 * 5 / 6, abs=0.02)


def test_bootstrap_interval_is_the_percentiles_of_resampled_means_and_repeats_for_a_seed():
    scores = np.array([5.0, 10.0, 40.0, 200.0, 15.0, 0.0])
    means = np.random.default_rng(7).choice(scores, size=(3_000, scores.size)).mean(axis=1)
    assert bootstrap_ci(scores, 0.9, 3_000, seed=7) == pytest.approx(tuple(np.quantile(means, [0.05, 0.95])))
    assert bootstrap_ci(scores, 0.9, 3_000) == bootstrap_ci(scores, 0.9, 3_000, seed=0)
