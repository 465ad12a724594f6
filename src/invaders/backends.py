"""Training backends, picked by name (``train.backend``), as Dopamine's ``create_agent`` and SB3's common
``learn()`` do: the train stage calls ``get_backend(name)(job)`` and never branches on the name.

A new backend is one module that defines ``train(job: TrainingJob) -> TrainedAgent`` plus one line in
``REGISTRY`` (``invaders.backend_registry``, which ``config`` reads without importing this module). This
module imports no backend (nor TensorFlow) until one is asked for, so the params can be validated in well
under a second.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from invaders.backend_registry import REGISTRY

if TYPE_CHECKING:
    from invaders.config import Params
    from invaders.models.networks import NetworkSpec

MetricsCallback = Callable[[dict[str, float], int], None]  # (metrics, agent step)


@dataclass
class TrainingResult:
    """What a training run produced, besides the learned weights."""

    curve: list[dict[str, float]] = field(default_factory=list)  # one row per log interval
    episode_returns: list[float] = field(default_factory=list)  # unclipped game scores, in order
    steps: int = 0  # agent steps
    updates: int = 0  # gradient updates
    wall_time_s: float = 0.0  # seconds, summed over resumed attempts
    eval_wall_time_s: float = 0.0  # seconds of wall_time_s spent evaluating while training


def recent_score(episode_returns) -> float | None:
    """Mean unclipped score of the last 20 training games (points), or None before the first game ends."""
    recent = list(episode_returns[-20:])
    return sum(recent) / len(recent) if recent else None


@dataclass
class TrainedAgent:
    model: Any  # a Keras 3 network holding the trained weights
    spec: NetworkSpec
    result: TrainingResult


class Checkpoints(Protocol):
    """Where a resumable backend saves its state, and restores it from when a run resumes."""

    def __call__(self, state: Any) -> None: ...  # save ``state.state_dict()``

    def restore(self, state: Any) -> None: ...  # load the newest checkpoint into ``state``, if resuming


@dataclass(frozen=True)
class TrainingJob:
    """What a backend is asked to do: train the network saved in ``initial`` for ``params.train.steps``."""

    params: Params
    initial: Path  # the folder build-model wrote
    on_metrics: MetricsCallback  # where training metrics go, under the names in ``invaders.names``
    checkpoints: Checkpoints | None = None  # for a backend that can resume: save there, restore from there first
    show_progress: bool = True


Backend = Callable[[TrainingJob], TrainedAgent]


def can_resume(name: str) -> bool:
    return REGISTRY[name].can_resume


def get_backend(name: str) -> Backend:
    return importlib.import_module(REGISTRY[name].module).train
