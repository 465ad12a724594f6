"""A temporary git repository holding the project's files with tiny params, for tests that run real `dvc`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

TINY = {
    "env": {"max_episode_frames": 1_500},
    "evaluation": {"episodes": 2, "num_envs": 2, "gif_max_frames": 30},
    "train": {"steps": 600, "warmup_fraction": 0.33, "replay_capacity": 4_000, "log_interval": 200, "num_envs": 2},
    "report": {"bootstrap_samples": 200},
}

# The shipped agents a temporary repository keeps: one of each kind the pipeline handles (a 100k and the 1M
# agent, a seed group, the notebook agent's published evaluation). The other shipped agents run the same
# evaluate-shipped stage on other weights; each costs a stage run to every full `dvc repro`.
TINY_SHIPPED = {
    "shipped": ["dqn-100k", "dqn-1m", "dqn-100k-indep-seed0", "dqn-100k-indep-seed1", "notebook-10k"],
    "seed_groups": {"dqn-100k x2 seeds, independent": ["dqn-100k-indep-seed0", "dqn-100k-indep-seed1"]},
}


def environment(root: Path) -> dict:
    """The environment of a command run in ``root``: this venv first, no tracking store or DVC root inherited."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("DVC_ROOT", None)
    return env


def run(command: list[str], cwd: Path, env: dict) -> str:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def write_params(root: Path, overrides: dict) -> None:
    """Update ``root``'s params.yaml section by section."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    for section, values in overrides.items():
        params[section].update(values)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_repo(root: Path, overrides: dict | None = None, shipped: dict = TINY_SHIPPED) -> Path:
    """Copy the project's files (no outputs, no dvc.lock, no MLflow store) into ``root`` and commit them
    with the tiny params, updated with ``overrides``, and the agents of ``shipped`` (``shipped/agents.yaml``'s
    layout) alone."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        source = REPO / name
        agent = name.split("/")[1] if name.startswith("shipped/") and name.count("/") > 1 else None
        if agent not in (None, *shipped["shipped"]):
            continue
        if source.is_file() and not name.startswith(("tests/", "results/", "report/", "models/")):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / name)
    (root / "dvc.lock").unlink(missing_ok=True)
    (root / "shipped/agents.yaml").write_text(yaml.safe_dump(shipped, sort_keys=False))
    write_params(root, TINY)
    if overrides:
        write_params(root, overrides)
    env = environment(root)
    for command in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "tiny"]):
        run(command, root, env)
    return root
