"""The project's DVC remote for real: `dvc push` of the whole default pipeline (tiny budgets) from one clone,
`dvc pull` in a fresh clone beside it, and the fresh clone has nothing to rerun (the default remote is a
folder beside the clones, `.dvc/config`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from repo_copy import environment, make_repo, run

# Tinier than the e2e defaults: the round trip is about files, not about what they hold.
TINIER = {"env": {"max_episode_frames": 600}, "train": {"steps": 400, "warmup_fraction": 0.25, "log_interval": 100}}


def outputs(root: Path) -> list[str]:
    """Every output (``outs`` and cached ``metrics``) that ``dvc.lock`` records, as paths in ``root``."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return sorted(out["path"] for stage in lock["stages"].values() for out in stage.get("outs", []))


def files(root: Path, output: str) -> dict[str, bytes]:
    """The files of one output (a file or a folder), by path relative to ``root``."""
    path = root / output
    found = [path] if path.is_file() else sorted(child for child in path.rglob("*") if child.is_file())
    return {str(child.relative_to(root)): child.read_bytes() for child in found}


@pytest.mark.e2e
def test_push_from_one_clone_and_pull_into_a_fresh_one_leaves_nothing_to_rerun(tmp_path):
    first = make_repo(tmp_path / "first", TINIER)
    env = environment(first)
    # The notebook agent's 139 MB weights (shipped-weights/, tracked by DVC, no stage's dependency) live in the
    # team's remote, not in git: this clone has none to push. The round trip here is the pipeline's outputs.
    run(["git", "rm", "-rq", "shipped-weights"], first, env)
    run(["dvc", "repro"], first, env)
    # dvc.lock and the .gitignore files dvc wrote beside the outputs, as the project commits them: report's
    # dependency results/shipped holds the latter, so a clone without them would rerun it
    run(["git", "add", "-A"], first, env)
    run(["git", "commit", "-qm", "outputs"], first, env)
    pushed = run(["dvc", "push"], first, env)
    remote = tmp_path / "invaders-dvc-remote"
    assert remote.is_dir() and any(path.is_file() for path in remote.rglob("*")), pushed
    produced = outputs(first)
    assert {"models/trained", "report", "results/evaluate/metrics.json"} <= set(produced), produced

    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    assert not any((second / output).exists() for output in produced), "a fresh clone holds no output"
    run(["dvc", "pull"], second, env)
    for output in produced:
        pulled = files(second, output)
        assert pulled and pulled == files(first, output), output
    assert "Data and pipelines are up to date" in run(["dvc", "status"], second, env)
    assert run(["dvc", "status", "--cloud"], second, env).strip().endswith("Cache and remote 'team' are in sync.")
    repro = run(["dvc", "repro"], second, env)
    assert "Running stage" not in repro, repro
    assert not (second / "mlflow.db").exists(), "nothing ran, so nothing was logged"


def test_the_default_remote_is_a_folder_beside_the_clone():
    from repo_copy import REPO

    config = (REPO / ".dvc/config").read_text()
    assert "remote = team" in config and "url = ../../invaders-dvc-remote" in config
    assert Path(REPO / ".dvc" / "../../invaders-dvc-remote").resolve().parent == REPO.parent
