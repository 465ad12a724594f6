"""A ``shipped/`` folder of agents trained with several seeds, for the tests of seed groups."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from conftest import REPO

from invaders.agents.card import AgentCard
from invaders.config import read_params_file

SEEDS = {f"dqn-100k-seed{seed}": seed for seed in range(3)}  # name -> train.seed


def shipped_with(
    root: Path, groups: object, seeds: dict[str, int], changed: dict | None = None, commits: dict | None = None
) -> Path:
    """``root/shipped``: agents.yaml listing ``seeds`` (name -> train.seed) and ``groups``, and for each agent
    its params.yaml (the project's, 100k steps and its seed, as the seed runs are made, updated with
    ``changed[name]``'s train keys), stand-in weights of its own and the shipped seed 0's card (its commit,
    or ``commits[name]``)."""
    (root / "shipped").mkdir(parents=True)
    (root / "shipped/agents.yaml").write_text(yaml.safe_dump({"shipped": ["dqn-100k", *seeds], "seed_groups": groups}))
    for name, seed in seeds.items():
        params = read_params_file(REPO / "params.yaml")
        params["train"].update({"steps": 100_000, "seed": seed, **(changed or {}).get(name, {})})
        (root / "shipped" / name).mkdir()
        (root / "shipped" / name / "params.yaml").write_text(yaml.safe_dump(params))
        (root / "shipped" / name / "weights.npz").write_bytes(f"weights of {name}".encode())
        card = AgentCard.read(REPO / "shipped" / "dqn-100k-seed0")
        dataclasses.replace(card, git_commit=(commits or {}).get(name, card.git_commit)).write(root / "shipped" / name)
    return root
