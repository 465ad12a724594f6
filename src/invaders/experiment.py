"""build-model, train and evaluate with params overrides, callable from Python: exactly what ``dvc repro``
runs (the same steps, ``invaders.steps``), for a test, a sweep trial or the console:

    invaders-experiment -S train.steps=20000 -S train.seed=1 --workspace runs/seed1
        # in runs/seed1: models/ and results/ as dvc.yaml declares them, each step an MLflow run
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from invaders.config import ConfigError, Params, build_params, parse_value, read_params_file, with_overrides
from invaders.names import Metric
from invaders.pipeline import OpenRun, Workspace, exit_on_user_error, run_step
from invaders.steps.build_model import BUILD_MODEL
from invaders.steps.evaluate import EVALUATE
from invaders.steps.train import TRAIN


def params_with(overrides: dict[str, Any], path: Path = Path("params.yaml")) -> Params:
    """``path``'s params with dotted keys replaced (``{"train.steps": 20000}``), validated as a whole."""
    return build_params(with_overrides(read_params_file(path), overrides))


def train_and_evaluate(
    overrides: dict[str, Any] | None = None,
    workspace: Workspace | None = None,
    params_path: Path = Path("params.yaml"),
    open_run: OpenRun | None = None,
) -> dict[str, float]:
    """build-model, train and evaluate with ``params_path`` and ``overrides``, in ``workspace`` (the working
    directory by default); each step is one run opened by ``open_run`` (an MLflow run by default).
    Returns the evaluation summary."""
    params = params_with(overrides or {}, params_path)
    workspace = workspace or Workspace()
    for step in (BUILD_MODEL, TRAIN):
        run_step(step, params, workspace, open_run)
    return run_step(EVALUATE, params, workspace, open_run)


def _override(text: str) -> tuple[str, Any]:
    key, separator, value = text.partition("=")
    if not separator:
        raise ConfigError(f"-S {text!r}: use -S section.key=value")
    return key, parse_value(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="build-model, train and evaluate, as dvc repro runs them.")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], help="section.key=value")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workspace", type=Path, default=Path("."), help="folder for models/ and results/")
    arguments = parser.parse_args(argv)
    with exit_on_user_error("experiment"):
        overrides = dict(_override(text) for text in arguments.overrides)
        summary = train_and_evaluate(overrides, Workspace(arguments.workspace), arguments.params)
    print(f"score {summary[Metric.SCORE_MEAN]:.1f}, {summary[Metric.EPISODES]} games")


if __name__ == "__main__":
    main()
