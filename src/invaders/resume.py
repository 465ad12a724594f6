"""Resuming an interrupted training run: where checkpoints live, when one is usable, how it is written.

Checkpoints live outside the workspace outputs, in ``<repo>/checkpoints/<dvc experiment>/<stage>``, so
``dvc repro`` or ``dvc exp run -n NAME`` started again after a crash finds them. A checkpoint is only
used by a run with the same params, except the budget and logging cadence (an interrupted run may be
continued with a larger ``train.steps``). A run that does not resume deletes the old checkpoints only
when it writes its own first one, so stopping it before then leaves them usable.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from invaders.checkpoints import CheckpointStore, prefixed, unprefixed
from invaders.config import Params, as_flat_dict
from invaders.hardware import learner_precision, update_path

# Raised when what a checkpoint holds changes: older ones then start fresh instead of failing to load.
CHECKPOINT_FORMAT = "5"  # 3: games saved; 4: one state dict (state.json); 5: one random stream per source

# Params a checkpoint survives: they change how often something is logged, saved or measured, not what is
# learned (train.steps is not one: the warm-up and the epsilon decay are fractions of it).
_FREE_TO_CHANGE = {"train.log_interval", "train.checkpoint_interval", "train.eval_interval", "train.eval_episodes"}


def checkpoint_store(root: Path, stage: str, on_save: Callable[[Path], None] | None = None) -> CheckpointStore:
    experiment = os.environ.get("DVC_EXP_NAME", "workspace")
    return CheckpointStore(root / "checkpoints" / experiment / stage, on_save=on_save)


def fingerprint(params: Params, initial_weights: Path) -> dict[str, str]:
    """What a checkpoint must match: the learning params the backend reads and the initial weights."""
    values = {
        **as_flat_dict(params.env, "env"),
        **as_flat_dict(params.model, "model"),
        **as_flat_dict(params.train.applied(), "train"),
    }
    values = {key: str(value) for key, value in values.items() if key not in _FREE_TO_CHANGE}
    if "train.precision" in values:  # the arithmetic this CPU runs, not the request ("auto")
        precision = learner_precision(params.train.precision)
        values |= {"train.precision": precision, "train.update_path": update_path(precision)}
    values["checkpoint_format"] = CHECKPOINT_FORMAT
    values["initial_weights_sha256"] = hashlib.sha256(initial_weights.read_bytes()).hexdigest()
    return values


def resumable_run(store: CheckpointStore, current: dict[str, str], stage: str) -> str | None:
    """The MLflow run id of a usable checkpoint; an unusable one is discarded with one line saying why."""
    latest = store.latest()
    if latest is None:
        return None
    meta = unprefixed("checkpoint", latest)
    changed = sorted(key for key in current if meta.get("fingerprint", {}).get(key) != current[key])
    if changed:
        before = meta.get("fingerprint", {})
        differences = ", ".join(
            "other initial weights"
            if key == "initial_weights_sha256"
            else "an older checkpoint format"
            if key == "checkpoint_format"
            else f"{key} {before.get(key)} -> {current[key]}"
            for key in changed
        )
        print(
            f"{stage}: checkpoint at step {meta['steps']:,} was made with {differences}; starting fresh",
            file=sys.stderr,
        )
        return None
    print(f"{stage}: resuming from the checkpoint at step {meta['steps']:,}", file=sys.stderr)
    return meta["run_id"]


class CheckpointWriter:
    """The ``Checkpoints`` a resumable backend is given: saves the trainer's state with what the run
    needs to continue (its id, the params fingerprint, the metrics not sent yet), then sends those metrics."""

    def __init__(self, store: CheckpointStore, run, current: dict[str, str], fresh: bool):
        self.store = store
        self.run = run
        self.current = current
        self.fresh = fresh  # a new run: checkpoints of an earlier one go when this one writes its first

    def __call__(self, trainer) -> None:
        if self.fresh:
            self.store.clear()
            self.fresh = False
        checkpoint_id = str(trainer.steps)
        rows = self.run.take_pending()
        meta = {"run_id": self.run.run_id, "fingerprint": self.current, "id": checkpoint_id, "pending_metrics": rows}
        self.store.save(trainer.steps, trainer.state_dict() | prefixed("checkpoint", {"steps": trainer.steps, **meta}))
        self.run.flush_checkpoint(checkpoint_id, rows)

    def restore(self, trainer) -> None:
        """When resuming, load the newest checkpoint into ``trainer`` and send whatever of its metrics never arrived."""
        if self.fresh:
            return
        state = self.store.latest()
        trainer.load_state_dict(state)
        checkpoint_id, rows = state["checkpoint.id"], state["checkpoint.pending_metrics"]
        self.run.flush_checkpoint(checkpoint_id, rows, start=self.run.flushed_through(checkpoint_id))
