"""The native DQN on a tiny image game: it learns, it is deterministic, its weights round-trip."""

import numpy as np
import pytest
from fake_env import BandGameVectorEnv, DelayedRewardVectorEnv

from invaders.agents.dqn import DQNLearner
from invaders.agents.policy import EpsilonGreedyPolicy, GreedyPolicy
from invaders.agents.training import DQNTrainer
from invaders.config import TrainConfig
from invaders.errors import InputError, ResourceError
from invaders.evaluation.protocol import play_episodes
from invaders.models.networks import NetworkSpec, build_q_network, load_model, save_weights
from invaders.replay.frame_replay import FrameReplay

SPEC = NetworkSpec("nature", True, (4, 44, 44), 3)
QUICK = TrainConfig(
    steps=2_400,
    num_envs=2,
    replay_capacity=4_000,
    warmup_fraction=0.08,  # 192 agent steps
    replay_ratio=0.5,
    n_step=1,
    gamma=0.5,
    learning_rate=5.0e-4,
    target_sync_updates=100,
    exploration_fraction=0.42,  # 1,008 agent steps
    epsilon_end=0.05,
    log_interval=200,
)


# The delayed game pays 5 steps after the decision: learning it carries value back through bootstrapped
# targets, so a broken target network, discount or terminal handling leaves the agent at chance.
DELAYED = TrainConfig(
    **{
        **QUICK.__dict__,
        "steps": 3_000,
        "gamma": 0.9,
        "n_step": 2,
        "target_sync_updates": 50,
        "exploration_fraction": 0.4,
    }
)


def train(config: TrainConfig, seed: int = 0, game=BandGameVectorEnv, precision: str = "float32"):
    import keras

    keras.utils.set_random_seed(seed)
    online, target = build_q_network(SPEC, precision=precision), build_q_network(SPEC, precision=precision)
    learner = DQNLearner(online, target, config, precision)
    replay = FrameReplay(config.replay_capacity, config.num_envs, (44, 44), 4, config.n_step, config.gamma)
    env = game(num_envs=config.num_envs)
    result = DQNTrainer(env, learner, replay, config, lambda metrics, step: None).run(show_progress=False)
    return learner, replay, result


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_agent_learns_the_pixel_game(precision):
    learner, _, result = train(QUICK, precision=precision)
    assert result.steps >= QUICK.steps
    assert result.updates == pytest.approx((result.steps - QUICK.warmup_steps) * QUICK.replay_ratio, abs=2)
    env = BandGameVectorEnv(num_envs=2)
    policy = EpsilonGreedyPolicy(GreedyPolicy(learner.online), 3, 0.0, seed=0)
    episodes = play_episodes(env, policy, 10, first_seed=123, show_progress=False)
    mean = np.mean([episode.score for episode in episodes])
    assert mean >= 9.0, f"optimal is 10, random is 3.3; got {mean}"


def test_agent_learns_a_reward_that_comes_only_after_a_delay():
    learner, _, result = train(DELAYED, game=DelayedRewardVectorEnv)
    policy = EpsilonGreedyPolicy(GreedyPolicy(learner.online), 3, 0.0, seed=0)
    episodes = play_episodes(DelayedRewardVectorEnv(num_envs=2), policy, 30, first_seed=123, show_progress=False)
    mean = np.mean([episode.score for episode in episodes])
    assert mean >= 0.9, f"optimal is 1, random is 0.33; got {mean}"
    # The values carried back: a won game is worth gamma^k with k steps left to its reward, a lost one 0.
    env = DelayedRewardVectorEnv(num_envs=1)
    observations, _ = env.reset(seed=5)
    cue, gamma = env.cues[0], DELAYED.gamma
    q_first = learner.online(observations.astype(np.float32)).numpy()[0]
    expected_first = np.where(np.arange(3) == cue, gamma**env.delay, 0.0)
    np.testing.assert_allclose(q_first, expected_first, atol=0.06)
    for steps_left in range(env.delay, 0, -1):
        observations, *_ = env.step(np.array([cue]))
        q_waiting = learner.online(observations.astype(np.float32)).numpy()[0]
        np.testing.assert_allclose(q_waiting, gamma ** (steps_left - 1), atol=0.06)


def test_same_seed_gives_same_actions_and_losses():
    short = TrainConfig(**{**QUICK.__dict__, "steps": 400, "warmup_fraction": 0.25, "log_interval": 50})
    _, replay_a, result_a = train(short)
    _, replay_b, result_b = train(short)
    assert np.array_equal(replay_a.actions, replay_b.actions)
    losses_a = [row["train/loss"] for row in result_a.curve]
    losses_b = [row["train/loss"] for row in result_b.curve]
    np.testing.assert_array_equal(losses_a, losses_b)


def test_weights_round_trip_keeps_predictions(tmp_path):
    model = build_q_network(SPEC)
    save_weights(model, SPEC, tmp_path)
    loaded, spec = load_model(tmp_path)
    observations = np.random.default_rng(0).integers(0, 255, (5, 4, 44, 44)).astype(np.float32)
    assert spec == SPEC
    np.testing.assert_allclose(model(observations).numpy(), loaded(observations).numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "missing"),
        (b"PK\x03\x04truncated", "unreadable or truncated"),
        (b"not a weights file at all", "not an .npz archive"),
    ],
)
def test_bad_weights_file_is_one_clear_error(tmp_path, content, message):
    save_weights(build_q_network(SPEC), SPEC, tmp_path)
    weights = tmp_path / "weights.npz"
    if content is None:
        weights.unlink()
    else:
        weights.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_model(tmp_path)


def test_weights_of_another_network_are_refused(tmp_path):
    other = NetworkSpec("nature", False, (4, 44, 44), 3)
    save_weights(build_q_network(other), SPEC, tmp_path)  # spec says dueling, weights are not
    with pytest.raises(InputError, match="do not fit"):
        load_model(tmp_path)


def test_native_training_refuses_a_saved_network_that_does_not_fit_the_environment(tmp_path):
    import yaml
    from conftest import REPO

    from invaders.agents.native_backend import build_trainer
    from invaders.config import build_params

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["env"]["frame_stack"] = 3  # changed after build-model made a network for 4
    params = build_params(raw)
    spec = NetworkSpec("nature", True, (4, 84, 84), 6)
    save_weights(build_q_network(spec), spec, tmp_path)
    with pytest.raises(InputError, match=r"the network takes observations \(4, 84, 84\) with 6 actions, the envir"):
        build_trainer(params, tmp_path, lambda metrics, step: None)


def test_replay_that_cannot_fit_in_memory_is_refused_before_training():
    from invaders.agents.native_backend import TRAINING_OVERHEAD_BYTES, check_memory

    replay_bytes = 7_071 * 1_000_000  # 1M transitions of 84x84 frames
    check_memory(1_000_000, replay_bytes, available=None)  # unknown: no check
    check_memory(1_000_000, replay_bytes, available=replay_bytes + TRAINING_OVERHEAD_BYTES)
    with pytest.raises(
        ResourceError, match=r"^train.replay_capacity = 1000000: training needs 8.6 GB \(7.1 GB of replay\), 4.0 GB"
    ):
        check_memory(1_000_000, replay_bytes, available=4_000_000_000)


def test_bfloat16_network_has_the_float32_weights_and_close_q_values():
    """Mixed precision changes the arithmetic, not the weights: one weights file serves both."""
    float32 = build_q_network(SPEC)
    bfloat16 = build_q_network(SPEC, precision="bfloat16")
    bfloat16.set_weights(float32.get_weights())
    assert [weight.dtype for weight in bfloat16.get_weights()] == [np.float32] * len(float32.get_weights())
    observations = np.random.default_rng(0).integers(0, 255, (8,) + SPEC.input_shape, dtype=np.uint8)
    exact = float32(observations.astype(np.float32)).numpy()
    mixed = bfloat16(observations.astype(np.float32))
    assert mixed.dtype == "float32", "the Q-value head computes in float32"
    np.testing.assert_allclose(mixed.numpy(), exact, atol=0.02 * np.abs(exact).max())
