"""Numbered checkpoints that are never half-visible: written in a hidden folder, fsynced, then renamed.

Everything a checkpoint holds answers one protocol, ``Stateful``: ``state_dict()`` gives a flat dict of
numpy arrays and JSON-able values, ``load_state_dict(state)`` takes it back; a part's state goes into
its owner's under a prefix (``prefixed``/``unprefixed``). Arrays are saved as ``.npy`` files, the
other values in ``state.json``.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

_PREFIX = "step-"
_VALUES = "state.json"


class Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def prefixed(prefix: str, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every key put under ``prefix.``, to hold it inside its owner's state."""
    return {f"{prefix}.{key}": value for key, value in state.items()}


def unprefixed(prefix: str, state: dict[str, Any]) -> dict[str, Any]:
    """The part of ``state`` under ``prefix.``, with the prefix removed."""
    start = f"{prefix}."
    return {key.removeprefix(start): value for key, value in state.items() if key.startswith(start)}


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not a checkpoint value")


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class CheckpointStore:
    def __init__(self, directory: Path, keep: int = 2, on_save: Callable[[Path], None] | None = None):
        self.directory = Path(directory)
        self.keep = keep
        # Told each newly committed checkpoint's folder, before the metrics it holds are sent: a sweep trial hands
        # it to Tune, and a trial stopped there (Ctrl-C, ASHA) must not have sent metrics its resumption resends.
        self.on_save = on_save

    def save(self, step: int, state: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.directory.glob(".*"):  # one writer per store: any hidden entry is garbage
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.rmtree(self.directory.with_name(f".{self.directory.name}.deleted"), ignore_errors=True)
        final = self.directory / f"{_PREFIX}{step:012d}"
        staging = self.directory / f".{final.name}.tmp"
        staging.mkdir()
        values = {key: value for key, value in state.items() if not isinstance(value, np.ndarray)}
        for name, array in state.items():
            if name in values:
                continue
            with open(staging / f"{name}.npy", "wb") as file:
                np.save(file, array, allow_pickle=False)
                file.flush()
                os.fsync(file.fileno())
        (staging / _VALUES).write_text(json.dumps(values, default=_json_value))
        _fsync(staging / _VALUES)
        _fsync(staging)
        replaced = final.with_name(f".{final.name}.deleted")
        if final.exists():  # the same step again (Ctrl-C right after a periodic checkpoint)
            os.rename(final, replaced)
        os.rename(staging, final)
        _fsync(self.directory)
        shutil.rmtree(replaced, ignore_errors=True)
        for old in self._committed()[: -self.keep]:
            self._delete(old)
        if self.on_save:
            self.on_save(final)
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

    def latest(self) -> dict[str, Any] | None:
        """The newest readable checkpoint's state, or None. Arrays are memory-mapped: reading the headers
        checks every file is complete, and nothing is loaded until used. Unreadable ones are skipped, saying so."""
        found = self.latest_with_folder()
        return found[1] if found else None

    def latest_with_folder(self) -> tuple[Path, dict[str, Any]] | None:
        """The newest readable checkpoint's folder and state (see ``latest``), or None."""
        for path in reversed(self._committed()):
            if not (path / _VALUES).exists() and (path / "meta.json").exists():
                print(f"checkpoint {path}: written by an older version of invaders; skipped", file=sys.stderr)
                continue
            try:
                state = json.loads((path / _VALUES).read_text())
                state.update(
                    {file.stem: np.load(file, mmap_mode="r", allow_pickle=False) for file in path.glob("*.npy")}
                )
                return path, state
            except (OSError, ValueError) as error:
                print(f"checkpoint {path}: unreadable ({type(error).__name__}: {error}); skipped", file=sys.stderr)
        return None

    def clear(self) -> None:
        if self.directory.is_dir():
            self._delete(self.directory)
