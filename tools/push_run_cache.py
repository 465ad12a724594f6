"""Push what `dvc push --run-cache` leaves out: the run-cache's copies of ``cache: false`` outputs.

DVC's run-cache keeps every output of a run, the ``cache: false`` ones (metrics, curves, game tables) too,
but `dvc push --run-cache` and `dvc exp push --run-cache` send only the cached ones: a colleague who pulls
the run-cache then finds an entry whose metrics file is missing and runs the stage again. This sends every
file the local run-cache names to the default remote (``make push`` runs it after `dvc push --run-cache`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from dvc.repo import Repo
from dvc_data.hashfile.hash_info import HashInfo


def run_cache_files(runs: Path) -> set[HashInfo]:
    """The files (not the folders: DVC pushes those) that the run-cache entries under ``runs`` record."""
    entries = (yaml.safe_load(path.read_text()) for path in runs.glob("*/*/*"))
    return {
        HashInfo("md5", out["md5"])
        for entry in entries
        for out in entry.get("outs", [])
        if "md5" in out and not out["md5"].endswith(".dir")
    }


def main() -> int:
    repo = Repo()
    files = run_cache_files(Path(repo.cache.legacy.path) / "runs")
    result = repo.cloud.push(files)
    print(f"run-cache: {len(result.transferred)} of {len(files)} files sent, {len(result.failed)} missing locally")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
