"""Ship a finished training run into ``shipped/<name>/``, where the ``evaluate-shipped`` stage finds it.

    invaders-ship NAME [--workspace DIR] [--command "how it was trained"]    # or python -m invaders.shipping
    invaders-ship NAME --model models:/space-invaders-dqn@champion          # a registered agent

Copies what the run's ``train`` stage wrote (weights, spec, agent.json, curve, metrics), the params it
was trained with, and its evaluation metrics if it has them; records the git commit of the workspace.
The agents the pipeline evaluates are listed once, in ``shipped/agents.yaml`` (``shipped_agents``), with
the seed groups the report shows as one row each (``seed_groups``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from invaders import files
from invaders.agents.card import AgentCard
from invaders.config import as_flat_dict, load_params
from invaders.errors import ConfigError, InputError, UserError
from invaders.tracking.mlflow_tracking import git_commit

# (source inside the workspace, name inside shipped/<name>/, required)
TRAINED = "models/trained"  # its agent card goes to the shipped folder with the commit added
AGENT = f"{TRAINED}/agent.json"
FILES = [
    ("models/trained/weights.npz", "weights.npz", True),
    ("models/trained/spec.json", "spec.json", True),
    ("params.yaml", "params.yaml", True),
    ("results/train/curve.csv", "curve.csv", True),
    ("results/train/metrics.json", "train_metrics.json", True),
    ("results/evaluate/metrics.json", "evaluation_metrics.json", False),
]
# Weights bigger than this (bytes) stay out of git (GitHub refuses files over 100 MB): they go to
# shipped-weights/<name>/weights.npz, for DVC, and the shipped folder carries the evaluation the run played
# (RECORDED) and the weights' SHA-256; the evaluate-shipped stage publishes that evaluation (README).
GIT_FILE_LIMIT = 95_000_000
WEIGHTS_STORE = "shipped-weights"
RECORDED = [
    ("results/evaluate/episodes.csv", "evaluation_episodes.csv"),
    ("results/evaluate/episode.gif", "evaluation_episode.gif"),
]
WEIGHTS_SHA256 = "weights.sha256"

NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")
# The one list of shipped agents: dvc.yaml loads it as `vars` (foreach: ${shipped}), Python reads it here.
AGENTS_LIST = Path("shipped/agents.yaml")


def shipped_agents(root: Path = Path(".")) -> list[str]:
    """Names of the agents the ``evaluate-shipped`` stage evaluates, from ``root``'s ``shipped/agents.yaml``."""
    return [str(name) for name in yaml.safe_load((root / AGENTS_LIST).read_text())["shipped"]]


SEED = "train.seed"  # the one param the members of a seed group differ in


@dataclass(frozen=True)
class SeedGroup:
    """Shipped agents trained alike but for ``train.seed``: one row of the report."""

    label: str  # the row's name
    members: tuple[str, ...]  # shipped agents, one per seed


def seed_groups(root: Path = Path(".")) -> list[SeedGroup]:
    """The ``seed_groups`` of ``root``'s ``shipped/agents.yaml``, checked: each member shipped and in one group,
    trained with its group's params but a seed of its own. A bad one is an ``InputError`` of one line."""
    listed = yaml.safe_load((root / AGENTS_LIST).read_text())
    shipped = {str(name) for name in listed["shipped"]}
    where = f"{AGENTS_LIST}: seed_groups"
    declared = listed.get("seed_groups") or {}
    if not isinstance(declared, dict):
        raise InputError(f"{where}: must map a row label to a list of shipped agents")
    groups, group_of = [], {}
    for label, members in declared.items():
        key = f"{where}[{label!r}]"
        if not isinstance(members, list) or len(members) < 2 or not all(isinstance(name, str) for name in members):
            raise InputError(f"{key}: must be a list of 2 or more shipped agents, one per seed")
        trained = {}
        for name in members:
            if name not in shipped:
                raise InputError(f"{key}: {name} is not in the shipped list")
            if name in group_of:
                again = "listed twice" if group_of[name] == label else f"already in seed_groups[{group_of[name]!r}]"
                raise InputError(f"{key}: {name} is {again}")
            group_of[name] = label
            try:
                trained[name] = training_params(root / AGENTS_LIST.parent / name)
            except ConfigError as error:
                raise InputError(f"{key}: {name}: {error}") from None
        problem = seed_problem(trained)
        if problem:
            raise InputError(f"{key}: {problem}")
        groups.append(SeedGroup(str(label), tuple(members)))
    return groups


def training_params(agent_dir: Path) -> dict[str, Any]:
    """What trained the agent in ``agent_dir``, from its params.yaml: ``env.*``, ``model.*`` and the ``train.*``
    keys its backend reads, as its evaluation logs them."""
    params = load_params(agent_dir / "params.yaml")
    return {
        **as_flat_dict(params.env, "env"),
        **as_flat_dict(params.model, "model"),
        **as_flat_dict(params.train.applied(), "train"),
    }


def seed_problem(trained: dict[str, dict[str, Any]]) -> str:
    """Why agents trained with ``trained`` (name -> ``training_params``) are not one setting run with
    different seeds, "" if they are: a param other than ``train.seed`` differs, or two share a seed."""
    first, reference = next(iter(trained.items()))
    seen: dict[Any, str] = {}
    for name, params in trained.items():
        differ = sorted(
            key for key in reference.keys() | params.keys() if key != SEED and params.get(key) != reference.get(key)
        )
        if differ:
            key = differ[0]
            return f"{name} has {key}={params.get(key)}, {first} {reference.get(key)}: only {SEED} may differ"
        if params[SEED] in seen:
            return f"{seen[params[SEED]]} and {name} both have {SEED}={params[SEED]}"
        seen[params[SEED]] = name
    return ""


class ShippingError(UserError):
    """A run that cannot be shipped, or a name or destination that cannot take it."""


def ship(workspace: Path, name: str, destination: Path, command: str = "") -> Path:
    """Copy a finished run of ``workspace`` into ``destination/name``; returns that folder."""
    target = _target(name, destination)
    required = [AGENT, *(source for source, _, needed in FILES if needed)]
    missing = [source for source in required if not (workspace / source).is_file()]
    if missing:
        raise ShippingError(f"{workspace} has no finished training run: missing {', '.join(missing)}")
    agent = AgentCard.read(workspace / TRAINED)  # an InputError naming the file if it is not a card
    try:
        planned = load_params(workspace / "params.yaml").train.steps
    except (OSError, UserError) as error:
        raise ShippingError(f"{workspace}: {error}") from None
    if agent.train_steps < planned:
        raise ShippingError(f"train_steps={agent.train_steps}: the run stopped before its {planned} steps")
    commit = git_commit(workspace)
    if commit == "unknown":
        raise ShippingError(f"{workspace} is not a git work tree: the commit that trained the agent is unknown")
    agent = dataclasses.replace(agent, git_commit=commit, trained_with=command or agent.trained_with)
    weights = workspace / FILES[0][0]
    outside = weights.stat().st_size > GIT_FILE_LIMIT
    store = weights_store(destination, name)
    if outside:
        _check_recorded(workspace, weights)
        if store.exists():
            raise ShippingError(f"{store} exists: shipped agents are never overwritten; pick another name")
    with files.atomic_directory(target) as staging:
        for source, copied, _ in FILES:
            if (workspace / source).is_file() and not (outside and copied == "weights.npz"):
                shutil.copy2(workspace / source, staging / copied)
        if outside:
            for source, copied in RECORDED:
                if (workspace / source).is_file():
                    shutil.copy2(workspace / source, staging / copied)
            digest = hashlib.sha256(weights.read_bytes()).hexdigest()
            (staging / WEIGHTS_SHA256).write_text(f"{digest}  {store.as_posix()}\n")
        agent.write(staging)
    if outside:
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(weights, store)
    return target


def weights_store(destination: Path, name: str) -> Path:
    """Where the weights of ``name`` go when they are too big for git: ``shipped-weights/<name>/weights.npz``,
    beside ``shipped/`` and outside every stage's deps (a DVC-tracked file there may be absent)."""
    return destination.parent / WEIGHTS_STORE / name / "weights.npz"


def _check_recorded(workspace: Path, weights: Path) -> None:
    """A run whose weights stay out of git ships its evaluation instead: it must have one, of these weights."""
    episodes = workspace / RECORDED[0][0]
    size = f"weights.npz is {weights.stat().st_size / 1e6:.0f} MB, over git's {GIT_FILE_LIMIT / 1e6:.0f} MB"
    if not episodes.is_file():
        raise ShippingError(f"{size}: ship it with its evaluation, but {episodes} is missing (run the evaluate stage)")
    if episodes.stat().st_mtime < weights.stat().st_mtime:
        raise ShippingError(f"{size}: {episodes} is older than the weights; rerun the evaluate stage")


def ship_model(uri: str, name: str, destination: Path) -> Path:
    """Copy the agent registered at ``uri`` (its weights, spec, card, params and, from its run, its
    training curve) into ``destination/name``; returns that folder."""
    import tempfile

    from invaders.tracking.models import download_agent, download_curve

    target = _target(name, destination)
    with tempfile.TemporaryDirectory() as folder:
        agent_dir, _ = download_agent(uri, Path(folder))
        if not (agent_dir / "params.yaml").is_file():
            raise ShippingError(
                f"{uri}: the model has no params.yaml; it was logged before agents carried their params"
            )
        agent = AgentCard.read(agent_dir)
        with files.atomic_directory(target) as staging:
            for copied in ("weights.npz", "spec.json", "params.yaml"):
                shutil.copy2(agent_dir / copied, staging / copied)
            download_curve(uri, staging / "curve.csv")
            dataclasses.replace(agent, trained_with=agent.trained_with or f"registered as {uri}").write(staging)
    return target


def _target(name: str, destination: Path) -> Path:
    if not NAME_PATTERN.fullmatch(name):
        raise ShippingError(f"name={name!r}: use lower-case letters, digits, '.', '_' and '-'")
    target = destination / name
    if target.exists():
        raise ShippingError(f"{target} exists: shipped agents are never overwritten; pick another name")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="folder name under shipped/, e.g. dqn-1m")
    parser.add_argument("--workspace", type=Path, default=Path("."), help="repository that ran the training")
    parser.add_argument("--destination", type=Path, default=Path("shipped"))
    parser.add_argument("--command", default="", help="how the run was started, recorded in agent.json")
    parser.add_argument("--model", help="ship a registered agent instead: models:/NAME@ALIAS, models:/NAME/VERSION")
    args = parser.parse_args(argv)
    try:
        if args.model:
            target = ship_model(args.model, args.name, args.destination)
        else:
            target = ship(args.workspace, args.name, args.destination, args.command)
    except UserError as error:
        print(f"ship: {error}", file=sys.stderr)
        return 2
    print(f"ship: {target} written; add '{args.name}' to the list in {AGENTS_LIST} to evaluate it in the pipeline")
    store = weights_store(args.destination, args.name)
    if not args.model and store.is_file():
        print(
            f"ship: its weights ({store.stat().st_size / 1e6:.0f} MB) are too big for git: they are in {store}; "
            f"keep them with `dvc add {store} && dvc push` and commit {store}.dvc; the pipeline publishes the "
            f"evaluation in {target / RECORDED[0][1]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
