"""Numbered checkpoints that are never half-visible: written in a hidden folder, fsynced, then renamed.

The rename is the commit point (Dopamine writes a sentinel last for the same reason): whatever moment
the process dies, ``latest()`` sees either the previous checkpoint or the new complete one. Deletion
goes the other way, renamed to a hidden name first, so no half-deleted checkpoint is ever visible. The
newest ``keep`` are kept; hidden leftovers of a killed writer are removed by the next ``save``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

_PREFIX = "step-"


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class CheckpointStore:
    def __init__(self, directory: Path, keep: int = 2):
        self.directory = Path(directory)
        self.keep = keep

    def save(self, step: int, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*"):  # one writer per store: any hidden entry is garbage
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.rmtree(self.directory.with_name(f".{self.directory.name}.deleted"), ignore_errors=True)
        final = self.directory / f"{_PREFIX}{step:012d}"
        staging = self.directory / f".{final.name}.tmp"
        staging.mkdir()
        for name, array in arrays.items():
            with open(staging / f"{name}.npy", "wb") as file:
                np.save(file, np.asarray(array), allow_pickle=False)
                file.flush()
                os.fsync(file.fileno())
        (staging / "meta.json").write_text(json.dumps(meta))
        _fsync(staging / "meta.json")
        _fsync(staging)
        replaced = final.with_name(f".{final.name}.deleted")
        if final.exists():  # the same step again (Ctrl-C right after a periodic checkpoint)
            os.rename(final, replaced)
        os.rename(staging, final)
        _fsync(self.directory)
        shutil.rmtree(replaced, ignore_errors=True)
        for old in self._committed()[: -self.keep]:
            self._delete(old)
        return final

    def _delete(self, path: Path) -> None:
        hidden = path.with_name(f".{path.name}.deleted")
        shutil.rmtree(hidden, ignore_errors=True)  # left by a process killed while deleting
        os.rename(path, hidden)
        shutil.rmtree(hidden, ignore_errors=True)

    def _committed(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.iterdir() if path.name.startswith(_PREFIX) and path.is_dir())

    def latest(self) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The newest readable checkpoint, or None. Arrays are memory-mapped: reading the headers checks
        every file is complete, and nothing is loaded until used. Unreadable ones are skipped, saying so."""
        for path in reversed(self._committed()):
            try:
                meta = json.loads((path / "meta.json").read_text())
                arrays = {file.stem: np.load(file, mmap_mode="r", allow_pickle=False) for file in path.glob("*.npy")}
                return arrays, meta
            except (OSError, ValueError) as error:
                print(f"checkpoint {path}: unreadable ({type(error).__name__}: {error}); skipped", file=sys.stderr)
        return None

    def clear(self) -> None:
        if self.directory.is_dir():
            self._delete(self.directory)
