"""One progress-bar style for every long loop: steps/s and the latest game score."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int, description: str, enabled: bool = True, done: int = 0) -> tqdm:
    """`done` steps were finished before (a resumed run): they count towards the total, not the rate."""
    return tqdm(
        total=total,
        initial=done,
        desc=description,
        unit="step",
        unit_scale=True,
        dynamic_ncols=True,
        mininterval=2.0,
        file=sys.stderr,
        disable=not enabled,
        smoothing=0.05,
    )
