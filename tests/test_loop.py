"""What the training loop stores for learning and what it reports as the score, on a scripted game that
pays Space Invaders' reward sizes and loses lives; and what evaluation reports on the same game."""

import numpy as np
import pytest
from fake_env import PointsAndLivesVectorEnv
from test_learner import linear_q_network

from invaders.agents.dqn import DQNLearner
from invaders.agents.training import DQNTrainer
from invaders.config import TrainConfig
from invaders.evaluation.protocol import play_episodes
from invaders.replay.frame_replay import FrameReplay

GAME = PointsAndLivesVectorEnv
TRANSITIONS = len(GAME.REWARDS)  # per game; then one final observation whose action is ignored
SCORE = sum(GAME.REWARDS)  # 310 points; clipped rewards would sum to 8, one life's worth to 215


def train_on_scripted_game(**overrides):
    config = TrainConfig(
        steps=3 * TRANSITIONS * 2,
        num_envs=2,
        replay_capacity=1_000,
        warmup_fraction=30 / (6 * TRANSITIONS),
        n_step=1,
        **overrides,
    )
    env = GAME(num_envs=2, size=2)
    logged = []
    learner = DQNLearner(linear_q_network(), linear_q_network(), config)
    replay = FrameReplay(config.replay_capacity, 2, (2, 2), 4, config.n_step, config.gamma)
    trainer = DQNTrainer(env, learner, replay, config, lambda metrics, step: logged.append((step, metrics)))
    result = trainer.run(show_progress=False)
    return replay, result, logged


def stored_game(replay: FrameReplay, env: int = 0, game: int = 0):
    """The slots of one game in one environment's ring: its transitions and its final observation."""
    slots = slice(game * (TRANSITIONS + 1), (game + 1) * (TRANSITIONS + 1))
    return (
        replay.frames[env, slots, 0, 0].tolist(),
        replay.rewards[env, slots].tolist(),
        replay.terminals[env, slots].tolist(),
        replay.finals[env, slots].tolist(),
    )


def test_replay_learns_from_clipped_rewards_and_life_loss_terminals():
    replay, _, _ = train_on_scripted_game()
    frames, rewards, terminals, finals = stored_game(replay, game=1)
    assert frames == list(range(1, TRANSITIONS + 2)), "each observation once, in order, then the final one"
    assert rewards == [float(np.sign(r)) for r in GAME.REWARDS] + [0.0]
    lost = [t in GAME.LIFE_LOST_AFTER for t in range(TRANSITIONS)]
    assert terminals == lost + [False], "a lost life and the game's end are terminal; the final slot has no transition"
    assert finals == [False] * TRANSITIONS + [True]


def test_replay_keeps_raw_rewards_and_only_game_over_terminals_when_asked():
    replay, _, _ = train_on_scripted_game(clip_rewards=False, terminal_on_life_loss=False)
    _, rewards, terminals, _ = stored_game(replay, env=1, game=2)
    assert rewards == [*GAME.REWARDS, 0.0]
    assert terminals == [False] * (TRANSITIONS - 1) + [True, False]


@pytest.mark.parametrize("clip_rewards", [True, False])
def test_training_scores_are_whole_unclipped_games(clip_rewards):
    _, result, logged = train_on_scripted_game(clip_rewards=clip_rewards)
    assert result.episode_returns == [SCORE] * 6, "all lives, raw points"
    assert [metrics["train/game_score"] for _, metrics in logged if "train/game_score" in metrics] == [SCORE] * 6
    curve_returns = [row["train/episode_return"] for row in result.curve if not np.isnan(row["train/episode_return"])]
    assert curve_returns and set(curve_returns) == {SCORE}
    assert result.steps == 6 * TRANSITIONS, "agent steps count transitions, not the ignored reset steps"


def test_evaluation_and_random_play_score_whole_unclipped_games():
    env = GAME(num_envs=3, size=2)
    rng = np.random.default_rng(0)
    episodes = play_episodes(
        env, lambda observations: rng.integers(0, 3, len(observations)), 7, first_seed=0, show_progress=False
    )
    assert [episode.score for episode in episodes] == [SCORE] * 7
    assert [episode.steps for episode in episodes] == [TRANSITIONS] * 7
    assert not any(episode.truncated for episode in episodes)


def test_evaluation_with_the_same_seed_plays_the_same_games():
    from fake_env import DelayedRewardVectorEnv

    def scores(seed: int) -> list[float]:
        always_left = lambda observations: np.zeros(len(observations), int)  # noqa: E731
        episodes = play_episodes(DelayedRewardVectorEnv(2, size=8), always_left, 40, seed, show_progress=False)
        return [episode.score for episode in episodes]

    assert scores(5) == scores(5)
    assert scores(5) != scores(6), "the seed decides the games"


def test_evaluation_while_training_is_logged_on_schedule_and_changes_nothing_learned():
    """Every eval_interval agent steps the evaluator scores the online network; its metrics reach the log at that
    step and the curve row, and training with it is bit-identical to training without it."""
    import keras

    def train(with_evaluation: bool):
        keras.utils.set_random_seed(0)
        config = TrainConfig(
            steps=120, num_envs=2, replay_capacity=1_000, warmup_fraction=0.25, n_step=1, log_interval=20,
            eval_interval=40,
        )  # fmt: skip
        learner = DQNLearner(linear_q_network(), linear_q_network(), config)
        replay = FrameReplay(config.replay_capacity, 2, (2, 2), 4, config.n_step, config.gamma)
        logged = []
        calls = []

        def evaluate():
            calls.append(learner.updates)
            learner.greedy_actions(np.zeros((2, 4, 2, 2), np.uint8))  # acts with the online network, as a game would
            return {"eval/score_mean": float(len(calls))}

        trainer = DQNTrainer(
            GAME(num_envs=2, size=2), learner, replay, config, lambda metrics, step: logged.append((step, metrics)),
            evaluate if with_evaluation else None,
        )  # fmt: skip
        result = trainer.run(show_progress=False)
        return result, logged, learner.online.get_weights()

    result, logged, weights = train(True)
    evaluated = [(step, metrics["eval/score_mean"]) for step, metrics in logged if "eval/score_mean" in metrics]
    assert [step for step, _ in evaluated] == [40, 80, 120]
    rows = {row["step"]: row.get("eval/score_mean") for row in result.curve}
    assert [rows[step] for step in (40, 80, 120)] == [1.0, 2.0, 3.0] and rows[20] is None
    assert result.eval_wall_time_s > 0
    plain, _, plain_weights = train(False)
    assert all(np.array_equal(a, b) for a, b in zip(weights, plain_weights))
    assert plain.episode_returns == result.episode_returns
