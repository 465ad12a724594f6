"""Run names: what a run is (``train 10k seed 0``), and the DVC experiment it ran in."""

from __future__ import annotations

import os


def run_name(what: str) -> str:
    """A run's name: ``what`` it is (``train 10k seed 0``) and the DVC experiment, if there is one."""
    experiment = os.environ.get("DVC_EXP_NAME", "workspace")
    return what if experiment == "workspace" else f"{what} ({experiment})"


def short_steps(steps: int) -> str:
    """Agent steps for a run name: ``10k``, ``1m``."""
    if steps >= 1_000_000:
        return f"{steps / 1e6:.3g}m"
    return f"{steps / 1e3:.3g}k" if steps >= 1000 else str(steps)
