"""Training on a game whose state can be saved, for the resume test: ``python exact_resume.py DIR [QUANTILES]``
restores the newest checkpoint in DIR into a freshly built trainer (other initial weights), trains
to the end and saves the final state as a checkpoint in DIR/final. QUANTILES > 0: the QR-DQN head."""

import dataclasses
import sys
from pathlib import Path

from fake_env import DelayedRewardVectorEnv

from invaders.agents.dqn import DQNLearner
from invaders.agents.training import DQNTrainer
from invaders.checkpoints import CheckpointStore
from invaders.config import TrainConfig
from invaders.models.networks import NetworkSpec, build_q_network
from invaders.replay.frame_replay import FrameReplay

SPEC = NetworkSpec("nature", True, (4, 44, 44), 3)
CONFIG = TrainConfig(
    steps=600, num_envs=2, replay_capacity=2_000, warmup_fraction=0.15, log_interval=50, n_step=3,
    target_sync_updates=40, exploration_fraction=0.5,
)  # fmt: skip


def build_trainer(seed: int, quantiles: int = 0) -> DQNTrainer:
    import keras

    keras.utils.set_random_seed(seed)
    spec = dataclasses.replace(SPEC, quantiles=quantiles)
    learner = DQNLearner(build_q_network(spec), build_q_network(spec), CONFIG, quantiles=quantiles)
    replay = FrameReplay(CONFIG.replay_capacity, CONFIG.num_envs, (44, 44), 4, CONFIG.n_step, CONFIG.gamma)
    return DQNTrainer(DelayedRewardVectorEnv(CONFIG.num_envs), learner, replay, CONFIG, lambda metrics, step: None)


def save_final(trainer: DQNTrainer, directory: Path) -> None:
    CheckpointStore(directory).save(trainer.steps, trainer.state_dict())


if __name__ == "__main__":
    directory = Path(sys.argv[1])
    trainer = build_trainer(seed=99, quantiles=int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    trainer.load_state_dict(CheckpointStore(directory).latest())
    trainer.run(show_progress=False)
    save_final(trainer, directory / "final")
