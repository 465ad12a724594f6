"""Animated GIFs of what an agent saw while playing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from invaders import files


def write_gif(frames: list[np.ndarray], path: Path, agent_steps_per_second: float = 15.0, scale: int = 3) -> None:
    """Save grayscale (H, W) or RGB (H, W, 3) frames as a looping GIF, enlarged ``scale`` times
    (84x84) or 2 times (raw frames); at real speed by default (60 emulator frames/s over a frame skip
    of 4 is 15 agent steps/s)."""
    scale = scale if frames[0].shape[0] < 100 else 2
    images = [
        Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.Resampling.NEAREST)
        for frame in frames
    ]
    with files.atomic_path(path) as temporary:
        images[0].save(
            temporary,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(1000 / agent_steps_per_second),
            loop=0,
        )
