"""A ``shipped/`` folder of agents trained with several seeds, for the tests of seed groups."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import REPO

from invaders.config import read_params_file

SEEDS = {f"dqn-100k-seed{seed}": seed for seed in range(3)}  # name -> train.seed


def shipped_with(root: Path, groups: object, seeds: dict[str, int], changed: dict | None = None) -> Path:
    """``root/shipped``: agents.yaml listing ``seeds`` (name -> train.seed) and ``groups``, and for each agent
    its params.yaml (the project's, 100k steps and its seed, as the seed runs are made, updated with
    ``changed[name]``'s train keys) and stand-in weights of its own."""
    (root / "shipped").mkdir(parents=True)
    (root / "shipped/agents.yaml").write_text(yaml.safe_dump({"shipped": ["dqn-100k", *seeds], "seed_groups": groups}))
    for name, seed in seeds.items():
        params = read_params_file(REPO / "params.yaml")
        params["train"].update({"steps": 100_000, "seed": seed, **(changed or {}).get(name, {})})
        (root / "shipped" / name).mkdir()
        (root / "shipped" / name / "params.yaml").write_text(yaml.safe_dump(params))
        (root / "shipped" / name / "weights.npz").write_bytes(f"weights of {name}".encode())
    return root
