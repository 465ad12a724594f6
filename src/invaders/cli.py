"""``invaders``: one command for every job of the project, each with its own ``--help``.

    invaders train                         # the train stage, as `dvc repro` runs it (params.yaml here)
    invaders evaluate --agent shipped/dqn-1m --output results/shipped/dqn-1m
    invaders ship dqn-1m                   # the jobs below run the project's own entry points
    invaders server start --port 5050

Each job hands its arguments to an entry point that already exists (a stage step, ``invaders-ship``,
``invaders-experiment``, ``invaders-sweep``, ``python -m invaders.tracking.server``, ``benchmarks/bench.py``):
this module only finds it. Nothing is imported before a job is chosen, so ``invaders --help`` starts
without TensorFlow. A bad argument is one line, ``invaders JOB: error: ...``, and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import runpy
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROG = "invaders"


def _one_line_error(parser: argparse.ArgumentParser, message: str) -> None:
    parser.exit(2, f"{parser.prog}: error: {message} (see {parser.prog} --help)\n")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints its usage block first; one line here
        _one_line_error(self, message)


@contextmanager
def _one_line_errors(prog: str) -> Iterator[None]:
    """While a job's own parser runs: errors as one line, and ``prog`` (``invaders ship``) in its usage."""
    error, argv0 = argparse.ArgumentParser.error, sys.argv[0]
    argparse.ArgumentParser.error = _one_line_error
    sys.argv[0] = prog  # what argparse calls a parser made without prog=
    try:
        yield
    finally:
        argparse.ArgumentParser.error, sys.argv[0] = error, argv0


def _entry_point(target: str) -> Callable[[list[str]], int | None]:
    """The job of an existing entry point, ``module:function`` taking argv."""
    module, function = target.split(":")

    def run(argv: list[str]) -> int | None:
        return getattr(importlib.import_module(module), function)(argv)

    return run


def _stage(name: str, module: str, step: str, what: str) -> Callable[[list[str]], None]:
    """The job that runs one stage step, as its script under ``stages/`` does."""

    def run(argv: list[str]) -> None:
        parser = _Parser(prog=f"{PROG} {name}", description=f"Stage {name}: {what}.")
        parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="default: params.yaml here")
        arguments = parser.parse_args(argv)
        from invaders.pipeline import run_stage

        run_stage(getattr(importlib.import_module(module), step), arguments.params)

    return run


def _evaluate(argv: list[str]) -> None:
    parser = _Parser(
        prog=f"{PROG} evaluate",
        description="Stage evaluate: an agent plays the evaluation protocol (the trained one by default).",
    )
    parser.add_argument(
        "--agent",
        help="a shipped agent's folder (weights.npz, spec.json, agent.json) or a model URI (models:/, runs:/)",
    )
    parser.add_argument("--output", type=Path, help="folder for its metrics.json, episodes.csv, videos and GIF")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="default: params.yaml here")
    arguments = parser.parse_args(argv)
    if bool(arguments.agent) != bool(arguments.output):
        parser.error("--agent and --output go together")
    from invaders.pipeline import exit_on_user_error, run_stage
    from invaders.steps.evaluate import evaluate_step

    with exit_on_user_error(f"{PROG} evaluate"):
        step = evaluate_step(arguments.agent, arguments.output)
    run_stage(step, arguments.params)


def _serve(argv: list[str]) -> None:
    parser = _Parser(
        prog=f"{PROG} serve", description="Serve a registered agent over HTTP (MLflow's model server, loopback only)."
    )
    parser.add_argument(
        "--agent", default="models:/space-invaders-dqn@champion", help="a registered agent; default: %(default)s"
    )
    parser.add_argument("--port", type=int, default=5001, help="default: %(default)s")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.port <= 65535:
        parser.error(f"--port {arguments.port}: a TCP port, 1-65535")
    if not arguments.agent.startswith(("models:/", "runs:/")):
        parser.error(f"--agent {arguments.agent}: a model URI, models:/NAME@ALIAS, models:/NAME/VERSION or runs:/")
    from invaders.pipeline import exit_on_user_error
    from invaders.tracking.registry import check_agent_uri
    from invaders.tracking.store import tracking_uri

    with exit_on_user_error(f"{PROG} serve"):
        check_agent_uri(arguments.agent)
    environment = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri()}
    # mlflow models serve starts `uvicorn` by name: this environment's bin first.
    environment["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), environment.get("PATH", "")))
    command = ["-m", "mlflow", "models", "serve", "-m", arguments.agent, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(arguments.port)]
    os.execve(sys.executable, [sys.executable, *command], environment)


def _bench(argv: list[str]) -> None:
    script = Path("benchmarks/bench.py")
    if not script.is_file():
        _one_line_error(
            _Parser(prog=f"{PROG} bench"), f"{script} not found in {Path.cwd()}: run it in the project's checkout"
        )
    sys.argv[1:] = argv  # the script reads sys.argv; run in this process, its parser errors are one line too
    runpy.run_path(str(script), run_name="__main__")


@dataclass(frozen=True)
class Job:
    summary: str  # one line in `invaders --help`
    run: Callable[[list[str]], int | None]  # takes the job's arguments; returns an exit code or None


JOBS: dict[str, Job] = {
    "baseline": Job(
        "stage baseline: a random agent plays the evaluation protocol",
        _stage("baseline", "invaders.steps.baseline", "BASELINE", "a random agent plays the evaluation protocol"),
    ),
    "build-model": Job(
        "stage build-model: the Q-network of params.yaml, initial weights",
        _stage("build-model", "invaders.steps.build_model", "BUILD_MODEL", "the Q-network and its initial weights"),
    ),
    "train": Job(
        "stage train: train the built network (resumes an interrupted run)",
        _stage("train", "invaders.steps.train", "TRAIN", "train the built Q-network with the backend of params.yaml"),
    ),
    "evaluate": Job("stage evaluate: an agent plays the evaluation protocol; scores, videos", _evaluate),
    "report": Job(
        "stage report: compare every evaluated agent (report/)",
        _stage("report", "invaders.steps.report", "REPORT", "compare every evaluated agent in the tracking store"),
    ),
    "experiment": Job(
        "build-model, train, evaluate with -S key=value overrides, in any folder",
        _entry_point("invaders.experiment:main"),
    ),
    "ship": Job("keep a finished run's agent in shipped/NAME", _entry_point("invaders.shipping:main")),
    "serve": Job("serve a registered agent over HTTP", _serve),
    "champion": Job(
        "the champion alias: a paired challenge on the validation games, or a move or pin by hand",
        _entry_point("invaders.reporting.champion:main"),
    ),
    "compare": Job(
        "every evaluation in the MLflow experiment, side by side", _entry_point("invaders.reporting.compare:main")
    ),
    "sweep": Job("run a sweep file on Ray Tune", _entry_point("invaders.sweeps.driver:main")),
    "server": Job(
        "the team's MLflow server: start, stop, status, add-user", _entry_point("invaders.tracking.server:main")
    ),
    "bench": Job("training speed on this machine (benchmarks/bench.py of the checkout)", _bench),
}


def _overview() -> _Parser:
    width = max(map(len, JOBS))
    jobs = "\n".join(f"  {name:<{width}}  {job.summary}" for name, job in JOBS.items())
    return _Parser(
        prog=PROG,
        usage=f"{PROG} JOB [ARGUMENTS]   ({PROG} JOB --help: the job's own arguments)",
        description="A reproducible DQN pipeline for Atari Space Invaders.",
        epilog=f"jobs:\n{jobs}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _overview()
    if not arguments:
        parser.error(f"name a job: {', '.join(JOBS)}")
    if arguments[0] in ("-h", "--help"):
        parser.print_help()
        raise SystemExit(0)
    name, rest = arguments[0], arguments[1:]
    if name not in JOBS:
        parser.error(f"no job {name!r}; the jobs: {', '.join(JOBS)}")
    with _one_line_errors(f"{PROG} {name}"):
        raise SystemExit(JOBS[name].run(rest) or 0)


if __name__ == "__main__":
    main()
