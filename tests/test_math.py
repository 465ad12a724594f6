import numpy as np
import pytest
import tensorflow as tf

from invaders.agents.dqn_math import epsilon_greedy, linear_epsilon
from invaders.agents.interval_stats import IntervalStats
from invaders.agents.losses import bootstrap_values, huber_loss, td_targets
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
