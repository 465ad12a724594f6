"""Stage train: train the built Q-network with the backend named in params (``invaders.steps.train.train``).

The native backend checkpoints every ``train.checkpoint_interval`` agent steps and on Ctrl-C; the
same command after a crash resumes from the newest checkpoint and continues the same MLflow run.
"""

from invaders.pipeline import run_stage
from invaders.steps.train import TRAIN

if __name__ == "__main__":
    run_stage(TRAIN)
