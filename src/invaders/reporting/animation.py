"""Watching an agent play: the game screen with its score, as an MP4 video and an animated GIF."""

from __future__ import annotations

import collections
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from invaders import files

if TYPE_CHECKING:
    from invaders.config import EnvConfig
    from invaders.evaluation.protocol import Episode
    from invaders.evaluation.recording import ActionRecorder

# H.264 in yuv420p, what browsers play (the HTML report's <video>): OpenCV's wheel has no H.264 encoder, so the
# frames go to the ffmpeg (with libx264) that imageio-ffmpeg ships. CRF 23 is x264's default quality.
VIDEO_OUTPUT = ["-crf", "23", "-preset", "veryfast", "-movflags", "+faststart"]
CAPTION_HEIGHT = 20  # pixels of the strip under the screen that shows the score


def captioned(frame: np.ndarray, caption: str) -> np.ndarray:
    """An RGB frame with ``caption`` written in a black strip under it."""
    import cv2

    strip = np.zeros((CAPTION_HEIGHT, frame.shape[1], 3), dtype=np.uint8)
    cv2.putText(strip, caption, (4, CAPTION_HEIGHT - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([frame, strip])


def encoded_on_the_way(frames: Iterable[np.ndarray], path: Path, frames_per_second: float) -> Iterator[np.ndarray]:
    """Yield RGB frames of one size (even sides) on while encoding them into an H.264 MP4 at ``path``, which
    appears, complete, once they end: one pass over frames makes a video and, say, a GIF."""
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as folder:
        encoded = Path(folder) / path.name
        writer = None
        for frame in frames:
            if writer is None:
                writer = imageio_ffmpeg.write_frames(
                    str(encoded),
                    (frame.shape[1], frame.shape[0]),
                    fps=frames_per_second,
                    codec="libx264",
                    pix_fmt_out="yuv420p",
                    quality=None,
                    macro_block_size=2,
                    output_params=VIDEO_OUTPUT,
                    ffmpeg_log_level="error",
                )
                writer.send(None)  # starts ffmpeg
            writer.send(np.ascontiguousarray(frame))
            yield frame
        if writer is not None:
            writer.close()
            with files.atomic_path(path) as temporary:
                os.replace(encoded, temporary)


def write_gif(frames: Iterable[np.ndarray], path: Path, agent_steps_per_second: float = 15.0, scale: int = 3) -> None:
    """Save grayscale (H, W) or RGB (H, W, 3) frames as a looping GIF, enlarged ``scale`` times (84x84)
    or kept at their size (screens); at real speed by default (60 emulator frames/s over a frame skip of 4
    is 15 agent steps/s). Frames are taken as they come: PIL keeps each one palette-sized, a third of RGB."""
    frames = iter(frames)
    first = next(frames)
    scale = scale if first.shape[0] < 100 else 1

    def image(frame: np.ndarray) -> Image.Image:
        return Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.Resampling.NEAREST)

    with files.atomic_path(path) as temporary:
        image(first).save(
            temporary,
            format="GIF",
            save_all=True,
            append_images=map(image, frames),
            duration=int(1000 / agent_steps_per_second),
            loop=0,
        )


def agent_steps_per_second(config: EnvConfig) -> float:
    """Real speed: the emulator's 60 frames/s over the frames one agent step takes (raw: the id's own skip,
    a range for the v0 ids, whose mean it takes)."""
    if config.preprocessing == "deepmind":
        return 60 / config.frame_skip
    import gymnasium

    skip = gymnasium.spec(config.id).kwargs.get("frameskip", 1)
    return 60 / (np.mean(range(*skip)) if isinstance(skip, tuple) else skip)


def write_watched_games(
    config: EnvConfig, recorder: ActionRecorder, episodes: list[Episode], max_frames: int, output: Path
):
    """The best and a median game of an evaluation on the colour screen with the score, at real speed, in
    ``output``: ``best_game.mp4``, ``median_game.mp4`` and ``episode.gif`` (the best game, for the report);
    each the first ``max_frames`` agent steps of its game. Returns the paths written."""
    from invaders.envs.atari import make_vector_env
    from invaders.evaluation.recording import best_and_median, replay_screen

    def screen(name, game: Episode):
        replayed = replay_screen(lambda: make_vector_env(config, 1, screen=True), recorder, game, max_frames)
        return (captioned(frame, f"{name}  score {score:.0f}") for frame, score in replayed)

    speed = agent_steps_per_second(config)
    chosen = best_and_median(episodes)
    best, median = output / "best_game.mp4", output / "median_game.mp4"
    collections.deque(encoded_on_the_way(screen("median", chosen["median"]), median, speed), maxlen=0)  # encode only
    write_gif(encoded_on_the_way(screen("best", chosen["best"]), best, speed), output / "episode.gif", speed)
    return [best, median, output / "episode.gif"]
