"""Animated GIFs of what an agent saw while playing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from invaders import io


def write_gif(frames: list[np.ndarray], path: Path, agent_steps_per_second: float = 15.0, scale: int = 3) -> None:
    """Save grayscale frames as a looping GIF, enlarged ``scale`` times; at real speed by default
    (60 emulator frames/s over a frame skip of 4 is 15 agent steps/s)."""
    images = [Image.fromarray(np.kron(frame, np.ones((scale, scale), dtype=np.uint8))) for frame in frames]
    with io.atomic_path(path) as temporary:
        images[0].save(
            temporary,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(1000 / agent_steps_per_second),
            loop=0,
        )
