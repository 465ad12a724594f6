"""The run interface: where a stage, a test or a trial sends its params, metrics, tags and files.

Code that records numbers sees a ``Run`` and never the sink behind it: ``MlflowRun`` (in ``stage_run``; only
the tracking package imports mlflow) or ``RecordingRun`` here, which keeps everything in memory. ``HeldMetrics``
wraps a run so that its metrics leave only with a training checkpoint, which is how a resumed run logs every step
once.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Protocol

from invaders.names import Tag

MetricRow = list  # [key, value, timestamp in ms, step]: JSON-able, so a checkpoint can keep it


def metric_rows(metrics: dict[str, float], step: int) -> list[MetricRow]:
    """``metrics`` at ``step`` as rows stamped now; values that are not finite are left out."""
    now = int(time.time() * 1000)
    return [[key, float(value), now, int(step)] for key, value in metrics.items() if math.isfinite(value)]


class Run(Protocol):
    """One run of a stage (or trial): what is logged to it, under the names in ``invaders.names``."""

    run_id: str
    resume_run_id: str | None  # the interrupted run this one continues (then equal to run_id), else None

    def log_params(self, params: dict[str, Any]) -> None: ...

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Record ``metrics`` at ``step``; they may be sent later, at the latest by ``flush``."""

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Keep a file, or a folder's files, under ``artifact_path`` (the run's root if None)."""

    def flush(self) -> None:
        """Send every metric recorded so far."""


class StoredRun(Run, Protocol):
    """A run that writes metric rows as they are and reads its tags back: what ``HeldMetrics`` needs."""

    def write_rows(self, rows: list[MetricRow], tags: dict[str, str]) -> None:
        """Send ``rows`` with their own timestamps (a row sent twice is stored once) and then ``tags``."""

    def stored_tag(self, key: str) -> str:
        """Tag ``key`` as the store holds it; "" if it has none."""


class RecordingRun:
    """A ``StoredRun`` kept in memory, for tests and for code that reports its numbers elsewhere."""

    def __init__(self, run_id: str = "recording", resume_run_id: str | None = None):
        self.run_id = run_id
        self.resume_run_id = resume_run_id
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.rows: list[MetricRow] = []  # as stored: in the order sent, each distinct row once
        self.artifacts: list[tuple[Path, str | None]] = []
        self._seen: set[tuple] = set()

    def log_params(self, params: dict[str, Any]) -> None:
        self.params.update({key: str(value) for key, value in params.items()})

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self.write_rows(metric_rows(metrics, step), {})

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update({key: str(value) for key, value in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.artifacts.append((Path(path), artifact_path))

    def flush(self) -> None:
        pass

    def write_rows(self, rows: list[MetricRow], tags: dict[str, str]) -> None:
        for row in rows:
            if tuple(row) not in self._seen:
                self._seen.add(tuple(row))
                self.rows.append(list(row))
        self.set_tags(tags)

    def stored_tag(self, key: str) -> str:
        return self.tags.get(key, "")

    def history(self, key: str) -> list[tuple[int, float]]:
        """(step, value) of each row of metric ``key``, by step."""
        return sorted((step, value) for name, value, _, step in self.rows if name == key)


class HeldMetrics:
    """A run whose metrics are held until a checkpoint sends them, so that a resumed run logs each step once.

    The trainer's checkpoint writer takes the held rows (``take_pending``), saves them in the checkpoint,
    then sends them (``flush_checkpoint``); a run resumed from that checkpoint sends whatever of them never
    arrived (``flushed_through``). ``flush`` sends the rest when the stage finishes; if it does not, the
    rows held since the last checkpoint are never sent, and the resumed run logs those steps again.
    Params, tags and artifacts go straight to the run.
    """

    ROWS_PER_WRITE = 100  # each write carries a tag saying how far it got

    def __init__(self, run: StoredRun):
        self.run = run
        self._held: list[MetricRow] = []

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @property
    def resume_run_id(self) -> str | None:
        return self.run.resume_run_id

    def log_params(self, params: dict[str, Any]) -> None:
        self.run.log_params(params)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.run.set_tags(tags)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.run.log_artifact(path, artifact_path)

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        self._held += metric_rows(metrics, step)

    def flush(self) -> None:
        """Send every held row, then whatever the run itself still queues."""
        rows, self._held = self._held, []
        for begin in range(0, len(rows), self.ROWS_PER_WRITE):
            self.run.write_rows(rows[begin : begin + self.ROWS_PER_WRITE], {})
        self.run.flush()

    def take_pending(self) -> list[MetricRow]:
        """The rows not sent yet, as JSON-able ``[key, value, timestamp, step]`` lists; nothing stays held."""
        pending, self._held = self._held, []
        return pending

    def flush_checkpoint(self, checkpoint_id: str, rows: list[MetricRow], start: int = 0) -> None:
        """Send ``rows[start:]``; each write carries a tag saying how far it got, so a resumed run re-sends
        only what is missing (see ``flushed_through``). MLflow's SQL stores commit a write's metrics and
        tag separately; a write whose tag was lost is re-sent whole, and the store drops the identical
        rows (a metric's key is its name, value, timestamp and step, all kept in the checkpoint)."""
        for begin in range(start, len(rows), self.ROWS_PER_WRITE):
            end = min(begin + self.ROWS_PER_WRITE, len(rows))
            self.run.write_rows(rows[begin:end], {Tag.METRICS_FLUSHED: f"{checkpoint_id}:{end}"})
        if start >= len(rows):
            self.run.set_tags({Tag.METRICS_FLUSHED: f"{checkpoint_id}:{len(rows)}"})

    def flushed_through(self, checkpoint_id: str) -> int:
        """How many of checkpoint ``checkpoint_id``'s metric rows already reached the store."""
        flushed_id, _, count = self.run.stored_tag(Tag.METRICS_FLUSHED).rpartition(":")
        return int(count) if flushed_id == checkpoint_id else 0
