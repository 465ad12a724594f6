"""The learner's targets, checked through real ``update`` calls on a tiny network whose online and
target networks disagree: the targets the update used are read back, not recomputed by a helper; the same
for QR-DQN's quantile targets and loss."""

import numpy as np
import pytest
from test_replay import decode, frame

from invaders.agents.dqn import DQNLearner
from invaders.config import TrainConfig
from invaders.replay.frame_replay import Batch, FrameReplay

STACK, SIDE, ACTIONS = 4, 2, 3
GAMMA = 0.5


def linear_q_network():
    """Q(s) = W . flatten(s) + b: values we can set and compute by hand."""
    import keras

    inputs = keras.Input((STACK, SIDE, SIDE))
    return keras.Model(inputs, keras.layers.Dense(ACTIONS)(keras.layers.Flatten()(inputs)))


def set_q(model, on_zeros: list[float], per_pixel: list[float]) -> None:
    """Q(all-zero observation) = ``on_zeros``; each pixel of value v adds ``v * per_pixel``."""
    kernel = np.tile(np.asarray(per_pixel, np.float32), (STACK * SIDE * SIDE, 1))
    model.set_weights([kernel, np.asarray(on_zeros, np.float32)])


def q_values(model, observations: np.ndarray) -> np.ndarray:
    return model(observations.astype(np.float32)).numpy()


def learner(double_dqn: bool = True, target_sync_updates: int = 1_000) -> DQNLearner:
    config = TrainConfig(
        gamma=GAMMA, double_dqn=double_dqn, target_sync_updates=target_sync_updates, learning_rate=1.0e-3
    )
    online, target = linear_q_network(), linear_q_network()
    agent = DQNLearner(online, target, config)
    # From state s (all zeros) Q_online = 0. At s' (pixels of 1): online prefers action 1, target action 0.
    set_q(online, [0.0, 0.0, 0.0], [1.0, 5.0, 2.0])
    set_q(target, [0.0, 0.0, 0.0], [10.0, 3.0, 7.0])
    return agent


def one_sample(returns: float, discount: float) -> Batch:
    observation = np.zeros((1, STACK, SIDE, SIDE), np.uint8)
    next_observation = np.zeros((1, STACK, SIDE, SIDE), np.uint8)
    next_observation[0, -1, 0, 0] = 1  # one pixel: Q_online(s') = [1, 5, 2], Q_target(s') = [10, 3, 7]
    return Batch(
        observation,
        np.array([2], np.int32),
        np.array([returns], np.float32),
        np.array([discount], np.float32),
        next_observation,
    )


@pytest.mark.parametrize(
    ("double_dqn", "bootstrap"),
    [(True, 3.0), (False, 10.0)],
    ids=["double-dqn-online-argmax-valued-by-target", "dqn-max-of-target"],
)
def test_update_uses_the_target_network_to_value_the_next_state(double_dqn, bootstrap):
    agent = learner(double_dqn)
    stats = agent.update(one_sample(returns=1.0, discount=0.25))
    assert stats.targets.tolist() == [1.0 + 0.25 * bootstrap]
    assert stats.q_mean == 0.0
    error = stats.targets[0]  # Q(s, a) = 0: the error is the target itself, in Huber's linear part
    assert stats.loss == pytest.approx(error - 0.5)


def test_update_moves_the_online_network_toward_the_target_and_leaves_the_target_network_alone():
    agent = learner()
    target_before = [w.copy() for w in agent.target.get_weights()]
    observation = np.zeros((1, STACK, SIDE, SIDE), np.uint8)
    before = q_values(agent.online, observation)[0, 2]
    agent.update(one_sample(returns=1.0, discount=0.25))
    assert q_values(agent.online, observation)[0, 2] > before, "a gradient step toward a higher target"
    for now, then in zip(agent.target.get_weights(), target_before):
        np.testing.assert_array_equal(now, then)


def test_target_network_syncs_every_interval_of_updates():
    agent = learner(target_sync_updates=3)
    target_before = [w.copy() for w in agent.target.get_weights()]
    batch = one_sample(returns=1.0, discount=0.25)
    agent.update(batch)
    agent.update(batch)
    for now, then in zip(agent.target.get_weights(), target_before):
        np.testing.assert_array_equal(now, then)
    agent.update(batch)
    for target, online in zip(agent.target.get_weights(), agent.online.get_weights()):
        np.testing.assert_array_equal(target, online)
    assert agent.update(batch).targets[0] != pytest.approx(1.0 + 0.25 * 3.0), "the next update values s' anew"


def write_episodes(replay: FrameReplay, episodes: list[tuple[int, bool]]) -> list[tuple[int, int, bool]]:
    """Append episodes of (transitions, ends in a terminal?) to a one-env memory, each followed by its
    final slot; slot ``i`` shows frame ``i`` and pays reward ``i``. Returns (first, last, terminal) slots."""
    index, spans = 0, []
    for length, terminal in episodes:
        spans.append((index, index + length - 1, terminal))
        for step in range(length + 1):
            final = step == length
            replay.add(
                frame(index),
                np.array([0]),
                np.array([0.0 if final else float(index)]),
                np.array([terminal and step == length - 1]),
                np.array([final]),
                np.array([step == 0]),
            )
            index += 1
    return spans


def test_update_targets_stop_at_terminals_and_bootstrap_on_truncation_from_replay():
    """3-step targets from a real replay memory, episodes ending in a terminal or cut by a time limit."""
    agent = learner(double_dqn=True)
    set_q(agent.online, [0.0] * 3, [1.0, 0.0, 0.0])  # online prefers action 0 wherever pixels are lit
    set_q(agent.target, [0.0] * 3, [1.0, 100.0, 100.0])  # the target values action 0 by its pixel sum
    replay = FrameReplay(64, 1, (SIDE, SIDE), STACK, 3, GAMMA)
    spans = write_episodes(replay, [(2, True), (5, True), (6, False), (5, True)])
    batch = replay.sample(512, np.random.default_rng(0))
    stats = agent.update(batch)
    seen = set()
    for observation, next_observation, target in zip(batch.observations, batch.next_observations, stats.targets):
        t = decode(observation)[-1]
        seen.add(t)
        first, last, terminal = next(span for span in spans if span[0] <= t <= span[1])
        steps = min(3, last - t + 1)
        expected = sum(GAMMA**k * (t + k) for k in range(steps))
        if not (terminal and t + steps - 1 == last):  # bootstrap: Q_target(s', argmax Q_online(s'))
            assert decode(next_observation)[-1] == t + steps
            expected += GAMMA**steps * float(next_observation.astype(np.float32).sum())
        assert target == pytest.approx(expected, rel=1e-5), t
    assert {6, 7, 13, 14} <= seen, "windows reaching a terminal and a time-limit cut were both sampled"


def test_a_state_missing_an_optimizer_variable_is_refused():
    agent = learner()
    state = agent.state_dict()
    last = max(key for key in state if key.startswith("optimizer."))
    del state[last]
    with pytest.raises(ValueError):
        learner().load_state_dict(state)


def test_update_picks_the_next_actions_with_the_updated_network():
    """``update(act_on=...)`` acts in the same compiled call, with the weights after the step: the actions a
    ``greedy_actions`` call after the update gives, not the ones before it."""
    agent = learner()
    zeros = np.zeros((2, STACK, SIDE, SIDE), np.uint8)  # Q(zeros) = the biases, all 0: argmax is action 0
    assert list(agent.greedy_actions(zeros)) == [0, 0]
    stats = agent.update(one_sample(returns=10.0, discount=0.0), act_on=zeros)  # raises Q(zeros, 2) above 0
    assert list(stats.greedy_actions) == [2, 2]
    assert list(agent.greedy_actions(zeros)) == [2, 2]
    assert agent.update(one_sample(returns=10.0, discount=0.0)).greedy_actions is None


# QR-DQN: the same tiny linear network with N = 2 quantiles per action (tau_hat 0.25, 0.75).
QUANTILES = 2


def linear_quantile_network():
    """Z(s) = W . flatten(s) + b, as (actions, 2) quantiles; the output is their mean, as the real heads."""
    import keras

    from invaders.models.networks import QUANTILES_LAYER, quantile_mean

    inputs = keras.Input((STACK, SIDE, SIDE))
    flat = keras.layers.Dense(ACTIONS * QUANTILES)(keras.layers.Flatten()(inputs))
    return keras.Model(
        inputs, quantile_mean(keras, keras.layers.Reshape((ACTIONS, QUANTILES), name=QUANTILES_LAYER)(flat))
    )


def quantile_learner(double_dqn: bool = True, online: list | None = None, target: list | None = None) -> DQNLearner:
    """At s' (one pixel of 1) the online quantiles are ``online`` and the target's ``target`` (per action);
    at the all-zero state every quantile is 0."""
    config = TrainConfig(gamma=GAMMA, double_dqn=double_dqn, target_sync_updates=1_000, learning_rate=1.0e-3)
    agent = DQNLearner(linear_quantile_network(), linear_quantile_network(), config, quantiles=QUANTILES)
    # Online means (1, 5, 1): action 1; target means (10, 3, 7): action 0.
    set_q(agent.online, [0.0] * 6, np.ravel(online or [[0.0, 2.0], [4.0, 6.0], [1.0, 1.0]]).tolist())
    set_q(agent.target, [0.0] * 6, np.ravel(target or [[8.0, 12.0], [1.0, 5.0], [6.0, 8.0]]).tolist())
    return agent


@pytest.mark.parametrize(
    ("double_dqn", "targets", "loss"),
    [(True, [1.25, 2.25], 1.25), (False, [3.0, 4.0], 3.0)],
    ids=["qr-double-dqn-online-mean-argmax-target-quantiles", "qr-dqn-target-mean-argmax"],
)
def test_quantile_update_targets_are_the_chosen_actions_target_quantiles(double_dqn, targets, loss):
    """r = 1, discount 0.25: Double DQN takes action 1 by the online mean, the target's quantiles of it are
    (1, 5): targets 1 + 0.25 (1, 5); without, action 0 by the target's mean, (8, 12). Q(s, 2)'s quantiles are
    (0, 0), so every error is a target, above 1: Huber |u| - 0.5, weighted tau_hat_i, summed over i (1) and
    averaged over the targets: (0.75 + 1.75) / 2 = 1.25 and (2.5 + 3.5) / 2 = 3.0."""
    agent = quantile_learner(double_dqn)
    stats = agent.update(one_sample(returns=1.0, discount=0.25))
    assert stats.targets.tolist() == [targets]
    assert stats.q_mean == 0.0
    assert stats.loss == pytest.approx(loss)


def test_quantile_update_moves_the_taken_actions_quantiles_toward_the_targets_and_not_the_target_net():
    from invaders.models.networks import quantile_view

    agent = quantile_learner()
    target_before = [w.copy() for w in agent.target.get_weights()]
    observation = np.zeros((1, STACK, SIDE, SIDE), np.float32)
    agent.update(one_sample(returns=1.0, discount=0.25))
    after = quantile_view(agent.online)(observation).numpy()[0]
    assert (after[2] > 0).all() and (after[:2] == 0).all(), "only the taken action's quantiles rise"
    for now, then in zip(agent.target.get_weights(), target_before):
        np.testing.assert_array_equal(now, then)


def test_quantile_learner_acts_on_the_quantiles_mean():
    """At s', action 0 has quantiles (0, 9), mean 4.5; action 1 (4, 4), the best worst case; action 2
    (-9, 10), the best quantile: the greedy action is 0, from the network's output and from the update's."""
    agent = quantile_learner(online=[[0.0, 9.0], [4.0, 4.0], [-9.0, 10.0]])
    lit = one_sample(returns=0.0, discount=0.0).next_observations
    assert list(agent.greedy_actions(lit)) == [0]
    assert list(agent.update(one_sample(returns=0.0, discount=0.0), act_on=lit).greedy_actions) == [0]


def test_quantile_targets_stop_at_terminals_and_bootstrap_on_truncation_from_replay():
    """The 3-step targets above, per quantile: the online mean picks action 0 wherever pixels are lit, whose
    target quantiles are (1, 2) x the pixel sum."""
    agent = quantile_learner(
        online=[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]], target=[[1.0, 2.0], [100.0, 100.0], [100.0, 100.0]]
    )
    replay = FrameReplay(64, 1, (SIDE, SIDE), STACK, 3, GAMMA)
    spans = write_episodes(replay, [(2, True), (5, True), (6, False), (5, True)])
    batch = replay.sample(512, np.random.default_rng(0))
    stats = agent.update(batch)
    assert stats.targets.shape == (512, QUANTILES)
    seen = set()
    for observation, next_observation, target in zip(batch.observations, batch.next_observations, stats.targets):
        t = decode(observation)[-1]
        seen.add(t)
        first, last, terminal = next(span for span in spans if span[0] <= t <= span[1])
        steps = min(3, last - t + 1)
        expected = np.full(QUANTILES, sum(GAMMA**k * (t + k) for k in range(steps)))
        if not (terminal and t + steps - 1 == last):
            assert decode(next_observation)[-1] == t + steps
            expected += GAMMA**steps * float(next_observation.astype(np.float32).sum()) * np.array([1.0, 2.0])
        np.testing.assert_allclose(target, expected, rtol=1e-5, err_msg=str(t))
    assert {6, 7, 13, 14} <= seen


def test_a_quantile_learner_refuses_a_network_with_another_number_of_quantiles():
    with pytest.raises(ValueError, match="quantiles=3: the network has 2"):
        DQNLearner(linear_quantile_network(), linear_quantile_network(), TrainConfig(), quantiles=3)
