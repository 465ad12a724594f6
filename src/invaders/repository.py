"""The repository the code runs in: its root, the commit checked out there, the DVC experiment of a stage."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def project_root() -> Path:
    """The repository root: DVC's ``DVC_ROOT`` inside a stage, else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def git_commit(root: Path) -> str:
    """The commit checked out in ``root``, or "unknown" outside a git work tree."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance(root: Path | None = None) -> dict[str, str]:
    """The DVC experiment a stage runs in ("workspace" outside `dvc exp run`) and the commit it started from."""
    commit = os.environ.get("DVC_EXP_BASELINE_REV") or git_commit(root or project_root())
    return {"experiment": os.environ.get("DVC_EXP_NAME", "workspace"), "commit": commit}
