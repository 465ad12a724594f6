"""Numbered checkpoints that are never half-visible: written in a hidden folder, fsynced, then renamed.

The rename is the commit point (Dopamine writes a sentinel last for the same reason): whatever moment
the process dies, ``latest()`` sees either the previous checkpoint or the new complete one. The
newest ``keep`` are kept.
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
        final = self.directory / f"{_PREFIX}{step:012d}"
        staging = self.directory / f".{final.name}.{os.getpid()}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for name, array in arrays.items():
            with open(staging / f"{name}.npy", "wb") as file:
                np.save(file, np.asarray(array), allow_pickle=False)
                file.flush()
                os.fsync(file.fileno())
        (staging / "meta.json").write_text(json.dumps(meta))
        _fsync(staging / "meta.json")
        _fsync(staging)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(staging, final)
        _fsync(self.directory)
        for old in self._committed()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

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
        shutil.rmtree(self.directory, ignore_errors=True)
