"""Watching the agent: the evaluation's games, recorded as seeds and actions, are played again on the real
ALE colour screen, score for score, and written as MP4 videos and a GIF at real speed."""

import dataclasses

import cv2
import numpy as np
import pytest
from PIL import Image, ImageSequence

from invaders.config import EnvConfig
from invaders.envs.atari import make_vector_env
from invaders.evaluation.protocol import Episode, play_episodes
from invaders.evaluation.recording import ActionRecorder, best_and_median, replay_screen
from invaders.reporting.animation import CAPTION_HEIGHT, agent_steps_per_second, write_watched_games
from invaders.reporting.gather import BEST_GAME, GIF, MEDIAN_GAME

CONFIG = EnvConfig()
EPISODES = 3


@pytest.fixture(scope="module")
def played():
    """Three random games of Space Invaders on two environments, recorded."""
    recorder = ActionRecorder(make_vector_env(CONFIG, 2))
    rng = np.random.default_rng(0)
    episodes = play_episodes(recorder, lambda obs: rng.integers(0, 6, len(obs)), EPISODES, 7, show_progress=False)
    return recorder, episodes


def screen_env():
    return make_vector_env(CONFIG, 1, screen=True)


def test_the_recorded_games_are_the_protocol_s_games(played):
    recorder, episodes = played
    assert sorted(recorder.actions) == [episode.seed for episode in episodes] == [7, 8, 9]
    assert all(len(recorder.actions[episode.seed]) >= episode.steps for episode in episodes)


def test_a_game_played_again_on_the_screen_scores_the_same(played):
    recorder, episodes = played
    for game in episodes:  # replay_screen raises when a score differs
        frames = [frame for frame, _ in replay_screen(screen_env, recorder, game, max_frames=5)]
        assert len(frames) == 5 and frames[0].shape == (210, 160, 3)
        assert len(np.unique(frames[-1].reshape(-1, 3), axis=0)) > 2, "colour"
    wrong = dataclasses.replace(episodes[0], score=-1.0)
    with pytest.raises(RuntimeError, match="not -1.0"):
        list(replay_screen(screen_env, recorder, wrong, max_frames=1))


def test_the_best_and_a_median_game():
    games = [Episode(score, 10, 40, False, seed) for seed, score in enumerate((5.0, 1.0, 9.0, 3.0))]
    chosen = best_and_median(games)
    assert chosen["best"].score == 9.0 and chosen["median"].score == 3.0


def test_evaluation_videos_are_the_colour_screen_at_real_speed(played, tmp_path):
    recorder, episodes = played
    written = write_watched_games(CONFIG, recorder, episodes, 12, tmp_path)
    assert sorted(path.name for path in written) == ["best_game.mp4", "episode.gif", "median_game.mp4"]
    assert {path.name for path in written} == {BEST_GAME, GIF, MEDIAN_GAME}  # what the report reads
    video = cv2.VideoCapture(str(tmp_path / "best_game.mp4"))
    assert video.get(cv2.CAP_PROP_FPS) == 15.0 == agent_steps_per_second(CONFIG)
    assert video.get(cv2.CAP_PROP_FRAME_COUNT) == 12
    assert (video.get(cv2.CAP_PROP_FRAME_WIDTH), video.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 210 + CAPTION_HEIGHT)
    codec = int(video.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little")
    assert codec in (b"avc1", b"h264"), f"H.264 (what browsers play), not {codec}"
    gif = Image.open(tmp_path / "episode.gif")
    durations = [
        frame.info["duration"] for frame in ImageSequence.Iterator(gif)
    ]  # equal frames merged; GIF times in 10 ms
    assert abs(sum(durations) - 12 * 1000 / 15) <= 12 * 10 and gif.size == (160, 210 + CAPTION_HEIGHT)
    assert not list(tmp_path.glob(".*")), "no temporary left"
