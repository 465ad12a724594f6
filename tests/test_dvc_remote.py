"""The project's DVC remote for real: `dvc push` from one clone, `dvc pull` in a fresh clone beside it, and the
fresh clone has nothing to rerun (the default remote is a folder beside the clones, `.dvc/config`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_copy import environment, make_repo, run


@pytest.mark.e2e
def test_push_from_one_clone_and_pull_into_a_fresh_one_leaves_nothing_to_rerun(tmp_path):
    first = make_repo(tmp_path / "first")
    env = environment(first)
    run(["dvc", "repro", "baseline", "build-model"], first, env)
    run(["git", "add", "dvc.lock"], first, env)
    run(["git", "commit", "-qm", "outputs"], first, env)
    stages = ["baseline", "build-model"]  # a tiny part of the pipeline: the round trip is the same for all
    pushed = run(["dvc", "push", *stages], first, env)
    remote = tmp_path / "invaders-dvc-remote"
    assert remote.is_dir() and any(path.is_file() for path in remote.rglob("*")), pushed

    second = tmp_path / "second"
    run(["git", "clone", "-q", str(first), str(second)], tmp_path, env)
    assert not (second / "models/initial").exists()
    run(["dvc", "pull", *stages], second, env)
    for output in ("models/initial/weights.npz", "results/baseline/episodes.csv", "results/baseline/metrics.json"):
        assert (second / output).read_bytes() == (first / output).read_bytes(), output
    assert "Data and pipelines are up to date" in run(["dvc", "status", *stages], second, env)
    assert (
        run(["dvc", "status", "--cloud", *stages], second, env).strip().endswith("Cache and remote 'team' are in sync.")
    )
    repro = run(["dvc", "repro", *stages], second, env)
    assert "Running stage" not in repro, repro
    assert not (second / "mlflow.db").exists(), "nothing ran, so nothing was logged"


def test_the_default_remote_is_a_folder_beside_the_clone():
    from repo_copy import REPO

    config = (REPO / ".dvc/config").read_text()
    assert "remote = team" in config and "url = ../../invaders-dvc-remote" in config
    assert Path(REPO / ".dvc" / "../../invaders-dvc-remote").resolve().parent == REPO.parent
