"""Stage baseline: a uniformly random agent plays the evaluation protocol (``invaders.steps.baseline.baseline``)."""

from invaders.pipeline import run_stage
from invaders.steps.baseline import BASELINE

if __name__ == "__main__":
    run_stage(BASELINE)
