import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def sqlite_store(root: Path) -> Iterator[None]:
    """Within the block, the tracking store is a sqlite store in ``root``, as for a stage run there (``DVC_ROOT``,
    ``MLFLOW_TRACKING_URI``); the environment is as it was afterwards. For module-scoped fixtures, which cannot
    take ``monkeypatch``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DVC_ROOT", str(root))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        yield
