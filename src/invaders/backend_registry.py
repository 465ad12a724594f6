"""The training backends by name (``train.backend``): what each is called, where it lives, what it reads.

Plain data with no imports from the package, so ``config`` can check a backend's name and keys without
depending on ``backends`` (whose ``TrainingJob`` carries the params ``config`` builds).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendEntry:
    module: str  # defines train(job: TrainingJob) -> TrainedAgent
    description: str  # one line, shown in the params docs
    can_resume: bool  # checkpoints and continues an interrupted run (gets a ``Checkpoints``)
    reads: tuple[str, ...] = ()  # the train.* fields only this backend reads (the others are common)


REGISTRY: dict[str, BackendEntry] = {
    "native": BackendEntry(
        "invaders.agents.native_backend",
        "this project's TensorFlow DQN",
        True,
        ("num_envs", "n_step", "terminal_on_life_loss", "checkpoint_interval", "precision"),
    ),
    # keras-rl2's fit keeps its memory and counters to itself: it cannot be checkpointed.
    "keras-rl2": BackendEntry("invaders.agents.kerasrl_backend", "keras-rl2's DQNAgent", False, ("memory_window",)),
}
