"""Stage build-model: build the Q-network named in params and save its initial weights
(``invaders.steps.build_model.build_model``)."""

from invaders.pipeline import run_stage
from invaders.steps.build_model import BUILD_MODEL

if __name__ == "__main__":
    run_stage(BUILD_MODEL)
