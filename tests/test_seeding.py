"""One run seed, independent streams; evaluation games seeded one by one, so agents play the same games."""

import numpy as np
import pytest
from fake_env import BandGameVectorEnv

from invaders.config import EnvConfig, EvaluationConfig, TrainConfig
from invaders.evaluation.protocol import play_episodes
from invaders.seeding import TRAINING_EMULATOR_SEED_FLOOR, emulator_seeds, game_seeds, run_seeds


def test_two_run_seeds_share_no_stream_and_one_seed_repeats_itself():
    first, second = run_seeds(0), run_seeds(1)
    assert first.weights != second.weights and first.learner != second.learner
    assert (first.weights, first.learner) == (run_seeds(0).weights, run_seeds(0).learner)
    for start in range(3):  # the first start of the games and two resumes
        mine, theirs = emulator_seeds(first.emulators, 8, start), emulator_seeds(second.emulators, 8, start)
        assert not set(mine) & set(theirs), "no emulator seed in common"
        assert (mine >= TRAINING_EMULATOR_SEED_FLOOR).all() and (mine < 2**31 - 1).all()
        np.testing.assert_array_equal(mine, emulator_seeds(run_seeds(0).emulators, 8, start))
    assert not set(emulator_seeds(first.emulators, 8, 0)) & set(emulator_seeds(first.emulators, 8, 1))
    draws = [
        np.random.default_rng(stream).integers(1 << 30, size=4).tolist()
        for stream in (first.replay, first.exploration, second.replay)
    ]
    assert draws[0] != draws[1] != draws[2] != draws[0]


def test_the_run_seed_gives_the_initial_weights():
    import keras

    from invaders.models.networks import NetworkSpec, build_q_network

    spec = NetworkSpec("nature", True, (4, 44, 44), 3)

    def initial(seed):
        keras.utils.set_random_seed(run_seeds(seed).weights)
        return build_q_network(spec).get_weights()

    zero, again, one = initial(0), initial(0), initial(1)
    assert all(np.array_equal(a, b) for a, b in zip(zero, again))
    assert not any(np.array_equal(a, b) for a, b in zip(zero, one) if a.std() > 0)


class RecordingBandGame(BandGameVectorEnv):
    """Remembers the seeds its games were reset with."""

    def reset(self, seed=None, options=None):
        self.seeds = [*getattr(self, "seeds", []), *np.atleast_1d(seed).tolist()]
        return super().reset(seed, options)


def test_training_games_of_two_run_seeds_start_from_different_emulator_seeds():
    from invaders.agents.dqn import DQNLearner
    from invaders.agents.training import DQNTrainer
    from invaders.models.networks import NetworkSpec, build_q_network
    from invaders.replay.frame_replay import FrameReplay

    spec = NetworkSpec("nature", True, (4, 44, 44), 3)
    seen = []
    for seed in (0, 1):
        config = TrainConfig(steps=40, num_envs=2, replay_capacity=200, seed=seed, warmup_fraction=0.5, batch_size=4)
        env = RecordingBandGame(num_envs=2)
        replay = FrameReplay(config.replay_capacity, 2, (44, 44), 4, config.n_step, config.gamma)
        learner = DQNLearner(build_q_network(spec), build_q_network(spec), config)
        DQNTrainer(env, learner, replay, config, lambda metrics, step: None).run(show_progress=False)
        seen.append(set(env.seeds))
    assert len(seen[0]) == 2 and not seen[0] & seen[1]


def test_evaluation_seed_ranges_are_the_first_seeds_of_their_games():
    evaluation = EvaluationConfig(test_seed=1000, validation_seed=5000, episodes=3)
    assert evaluation.first_seed("test") == 1000 and evaluation.first_seed("validation") == 5000
    assert game_seeds(1000, 3).tolist() == [1000, 1001, 1002]


@pytest.mark.parametrize("games", [5, 2])  # 2: fewer games than environments
def test_a_game_is_the_same_whichever_environment_plays_it(games):
    """Real ALE, sticky actions: game k plays seed first + k on 2 or 3 parallel emulators alike, so two
    agents evaluated on one range play the same games (a paired comparison), game by game in seed order."""
    from invaders.envs.atari import make_vector_env

    config = EnvConfig(max_episode_frames=1_200)  # 300 agent steps: several games end by losing, some by the cap

    def pixel_policy(observations):  # deterministic in what it sees, so only the emulator's seed varies
        return (observations[:, -1, 40:60].sum(axis=(1, 2)) % 6).astype(np.int32)

    played = {}
    for num_envs in (2, 3):
        env = make_vector_env(config, num_envs)
        episodes = play_episodes(env, pixel_policy, games, 1_000, show_progress=False)
        env.close()
        played[num_envs] = [(episode.seed, episode.score, episode.steps) for episode in episodes]
    assert played[2] == played[3]
    assert [seed for seed, _, _ in played[2]] == list(range(1_000, 1_000 + games))
    if games == 5:
        assert len({(score, steps) for _, score, steps in played[2]}) > 1, "the seeds make different games"
