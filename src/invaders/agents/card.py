"""The agent card: ``agent.json`` beside an agent's weights, saying what the agent is and how it was trained.

The train stage writes it into ``models/trained/``, shipping adds where the agent came from (the commit, the
DVC experiment or sweep trial, the train stage's hash in dvc.lock, the command), and the evaluate stage reads
it to label and log the agent it plays. Fields added later are optional: older cards stay readable.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from invaders import files
from invaders.errors import InputError
from invaders.models.networks import HEAD_BEFORE_NAMES

FILE = "agent.json"
_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


@dataclass(frozen=True)
class AgentCard:
    """One agent: its network, its training, and where it came from. Field names are agent.json's keys."""

    backend: str  # train.backend that trained it
    network: str  # model.network
    dueling: bool  # model.dueling
    train_steps: int  # agent steps trained
    updates: int  # gradient updates made
    wall_time_s: float  # training time (seconds, summed over resumed attempts)
    train_run_id: str  # the MLflow run of its training
    precision: str | None = None  # arithmetic of its layers while it trained ("bfloat16"); unset: float32
    quantiles: int | None = None  # model.quantiles: quantiles per action of its QR-DQN head; unset: expected values
    head: str | None = None  # its Q-network's output head (networks.HEADS); unset: older cards (HEAD_BEFORE_NAMES)
    git_commit: str | None = None  # commit that trained it, clean (shipped agents)
    trained_with: str | None = None  # how its training was started (shipped agents, optional)
    experiment: str | None = None  # the DVC experiment that trained it, or "sweep NAME trial ID" (shipped agents)
    dvc_train_md5: str | None = None  # dvc.lock's hash of the train stage's models/trained out (shipped agents)

    @classmethod
    def read(cls, directory: Path) -> AgentCard:
        """The card in ``directory``; a missing or invalid one is an ``InputError`` of one line."""
        path = Path(directory) / FILE
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{path}: missing; run the train stage first (dvc repro)") from None
        except ValueError:
            raise InputError(f"{path}: not valid JSON; rerun the train stage (dvc repro -f train)") from None
        problem = _problem(values)
        if problem:
            raise InputError(f"{path}: {problem}; rerun the train stage (dvc repro -f train)")
        return cls(**values)

    def write(self, directory: Path) -> None:
        """Write ``agent.json`` into ``directory``; fields that are not set are left out."""
        files.write_text(Path(directory) / FILE, json.dumps(self.as_dict(), indent=2) + "\n")

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    @property
    def label(self) -> str:
        """How reports name the agent: ``native nature-dueling-streams 100,000 steps`` (its network and head;
        ``... steps bf16`` if trained so, ``nature-dueling-streams-qr200`` with a QR-DQN head of 200 quantiles)."""
        named = self.head or HEAD_BEFORE_NAMES[self.dueling]
        head = ("" if named == "plain" else f"-{named}") + (f"-qr{self.quantiles}" if self.quantiles else "")
        arithmetic = " bf16" if self.precision == "bfloat16" else ""
        return f"{self.backend} {self.network}{head} {self.train_steps:,} steps{arithmetic}"

    def as_params(self) -> dict[str, Any]:
        """The card as run params: ``agent.<field>``."""
        return {f"agent.{key}": value for key, value in self.as_dict().items()}


def _problem(values: Any) -> str:
    """What keeps ``values`` from being a card, "" if nothing: not an object, a missing or unknown field, a wrong type."""
    if not isinstance(values, dict):
        return "not a JSON object"
    fields = {field.name: field for field in dataclasses.fields(AgentCard)}
    missing = [name for name, field in fields.items() if field.default is dataclasses.MISSING and name not in values]
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(set(values) - set(fields))
    if unknown:
        return f"unknown field {', '.join(unknown)} (allowed: {', '.join(fields)})"
    hints = typing.get_type_hints(AgentCard)
    for name, value in values.items():
        kind = next(kind for kind in _KINDS if kind in (typing.get_args(hints[name]) or (hints[name],)))
        accepted = (int, float) if kind is float else kind
        wrong = not isinstance(value, accepted) or (isinstance(value, bool) and kind is not bool)
        if wrong and not (value is None and fields[name].default is None):
            return f"{name}={json.dumps(value)}: must be {_KINDS[kind]}"
    return ""
