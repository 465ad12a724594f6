"""Ship a finished training run into ``shipped/<name>/``, where the ``evaluate-shipped`` stage finds it.

    invaders-ship NAME [--workspace DIR] [--command "how it was trained"]    # or python -m invaders.shipping
    invaders-ship NAME --model models:/space-invaders-dqn@champion          # a registered agent

Copies what the run's ``train`` stage wrote (weights, spec, agent.json, curve, metrics), the params it
was trained with, and its evaluation metrics if it has them. Only what a DVC experiment trained on a clean
commit ships: the work tree must hold exactly that commit (a committed ``dvc repro``) or one of its DVC
experiments (``dvc exp run``, or ``dvc exp apply`` after a queued one), and ``dvc status train`` must find
``models/trained`` as dvc.lock records it. The card records the commit, the experiment and that hash. A
registered agent (a sweep trial's) ships with the commit and the experiment or sweep trial its run records.
The agents the pipeline evaluates are listed once, in ``shipped/agents.yaml`` (``shipped_agents``), with
the seed groups the report shows as one row each (``seed_groups``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from invaders import files
from invaders.agents.card import AgentCard
from invaders.config import as_flat_dict, load_params
from invaders.errors import ConfigError, InputError, UserError
from invaders.models.networks import NetworkSpec
from invaders.repository import git_commit

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
        problem = seed_problem(trained) or commit_problem(
            {name: AgentCard.read(root / AGENTS_LIST.parent / name).git_commit for name in members}
        )
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


def commit_problem(commits: dict[str, str | None]) -> str:
    """Why agents trained at ``commits`` (name -> its card's git_commit) are not one code, "" if they are."""
    first, reference = next(iter(commits.items()))
    for name, commit in commits.items():
        if not commit:
            return f"{name}: its agent.json records no git_commit; a seed group is one commit"
        if commit != reference:
            return f"{name} was trained at commit {commit[:10]}, {first} at {(reference or '?')[:10]}: one commit"
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
    experiment = experiment_of(workspace, commit)
    agent = dataclasses.replace(
        agent,
        head=agent.head or spec_head(workspace / TRAINED),
        git_commit=commit,
        trained_with=command or agent.trained_with,
        experiment=experiment,
        dvc_train_md5=train_stage_md5(workspace),
    )
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


EXPERIMENT_REFS = "refs/exps"  # DVC keeps each experiment as a commit on its baseline: refs/exps/../<name>
COMMITTED = "workspace"  # the experiment name of a run committed as it is (dvc repro, then git commit)


def _git(workspace: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=workspace, capture_output=True, text=True, check=True).stdout


def changed_paths(workspace: Path) -> list[str]:
    """Files of the work tree that differ from its commit: changed, deleted or untracked (ignored ones aside)."""
    entries = _git(workspace, "status", "--porcelain", "-z", "--untracked-files=all").split("\0")
    paths, renamed = [], False
    for entry in entries:
        if renamed:  # the original path of a rename follows it
            paths.append(entry)
            renamed = False
        elif entry:
            paths.append(entry[3:])
            renamed = entry[0] in "RC"
    return sorted(paths)


def experiment_of(workspace: Path, commit: str) -> str:
    """The DVC experiment whose files the work tree of ``workspace`` holds: ``COMMITTED`` when it is ``commit``
    itself, else the experiment on ``commit`` that changed exactly the changed files, to the same contents.
    Anything else (changed code, an uncommitted ``dvc repro``) is a ShippingError of one line."""
    changed = changed_paths(workspace)
    if not changed:
        return COMMITTED
    listed = _git(workspace, "for-each-ref", "--format=%(refname) %(parent)", EXPERIMENT_REFS).splitlines()
    for ref, _, parents in (line.partition(" ") for line in listed):
        if is_experiment(ref) and parents.split()[:1] == [commit] and _holds(workspace, commit, ref, changed):
            return ref.rpartition("/")[2]
    shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
    raise ShippingError(
        f"{workspace} has uncommitted changes no DVC experiment on {commit[:10]} holds ({shown}): ship only what "
        "`dvc exp run` trained on a clean commit (commit the change, then run the experiment)"
    )


def is_experiment(ref: str) -> bool:
    """Whether ``ref`` names an experiment, refs/exps/<2 hex>/<38 hex>/<name>, not one of DVC's own refs
    (refs/exps/exec/EXEC_HEAD and the like, which may point at the baseline or at a root commit)."""
    parts = ref.split("/")
    return (
        len(parts) == 5
        and len(parts[2]) == 2
        and len(parts[3]) == 38
        and all(c in "0123456789abcdef" for c in parts[2] + parts[3])
    )


def _holds(workspace: Path, commit: str, ref: str, changed: list[str]) -> bool:
    """Whether experiment ``ref`` changed exactly ``changed`` from ``commit``, to the work tree's contents."""
    if sorted(_git(workspace, "diff", "--name-only", "--no-renames", commit, ref).split()) != sorted(set(changed)):
        return False
    present = [path for path in changed if (workspace / path).is_file()]
    in_experiment = {}  # path -> blob id, as the experiment's commit holds it
    for line in _git(workspace, "ls-tree", "-r", ref, "--", *changed).splitlines():
        info, path = line.split("\t", 1)
        in_experiment[path] = info.split()[2]
    if set(in_experiment) != set(present):
        return False
    hashes = _git(workspace, "hash-object", "--", *present).split() if present else []
    return all(in_experiment[path] == digest for path, digest in zip(present, hashes))


def train_stage_md5(workspace: Path) -> str:
    """dvc.lock's hash of the train stage's ``models/trained``, once ``dvc status train`` finds the work tree's
    copy to be that one (not trained again outside DVC since)."""
    try:
        outs = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["train"]["outs"]
        md5 = next(out["md5"] for out in outs if out["path"] == TRAINED)
    except (OSError, KeyError, TypeError, StopIteration):
        raise ShippingError(
            f"{workspace / 'dvc.lock'}: no train stage with {TRAINED} among its outs; train with dvc exp run"
        ) from None
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "train", "--json"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env={**os.environ, "DVC_NO_ANALYTICS": "1"},
    )
    changes = json.loads(status.stdout or "null") if status.returncode == 0 else None
    if changes is None:
        raise ShippingError(f"{workspace}: dvc status train failed: {(status.stderr.strip() or '?').splitlines()[-1]}")
    if changes:
        raise ShippingError(
            f"{workspace}: the train stage differs from dvc.lock ({json.dumps(changes['train'])}): ship only what "
            "the DVC experiment trained (dvc exp run, or dvc exp apply NAME)"
        )
    return md5


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
    training curve) into ``destination/name``, its card recording the commit and the DVC experiment or
    sweep trial its run records; returns that folder."""
    import tempfile

    from invaders.tracking.registry import download_agent, download_curve, version_provenance

    target = _target(name, destination)
    with tempfile.TemporaryDirectory() as folder:
        agent_dir, _ = download_agent(uri, Path(folder))
        if not (agent_dir / "params.yaml").is_file():
            raise ShippingError(
                f"{uri}: the model has no params.yaml; it was logged before agents carried their params"
            )
        agent = AgentCard.read(agent_dir)
        # A shipped agent registered by its evaluation has its provenance on its card; a trained one, on its run.
        commit, experiment = (agent.git_commit, agent.experiment) if agent.git_commit else version_provenance(uri)
        if not commit:
            raise ShippingError(f"{uri}: its training run records no git commit; the code that trained it is unknown")
        with files.atomic_directory(target) as staging:
            for copied in ("weights.npz", "spec.json", "params.yaml"):
                shutil.copy2(agent_dir / copied, staging / copied)
            download_curve(uri, staging / "curve.csv")
            dataclasses.replace(
                agent,
                head=agent.head or spec_head(agent_dir),
                git_commit=commit,
                experiment=experiment or None,
                trained_with=agent.trained_with or f"registered as {uri}",
            ).write(staging)
    return target


def spec_head(agent_dir: Path) -> str:
    """The head named by the agent's ``spec.json``: what its card records, for cards written before cards did."""
    return NetworkSpec.from_json((agent_dir / "spec.json").read_text()).head


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
