"""Stage baseline: a uniformly random agent plays the evaluation protocol (``invaders.stages.baseline.baseline``)."""

from invaders.pipeline import run_stage
from invaders.stages.baseline import BASELINE

if __name__ == "__main__":
    run_stage(BASELINE)
