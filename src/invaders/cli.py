"""``invaders``: one command for every job of the project, each with its own ``--help``.

    invaders train                         # the train stage, as `dvc repro` runs it (params.yaml here)
    invaders evaluate --agent shipped/dqn-1m --output results/shipped/dqn-1m
    invaders ship dqn-1m                   # the jobs below run the project's own entry points
    invaders server start --port 5050
    invaders bench peers --steps 20000     # a script of the checkout's benchmarks/

Each job hands its arguments to an entry point that already exists (a stage step, ``invaders.shipping``,
``invaders.experiment``, ``invaders.sweeps.driver``, ``invaders.tracking.server`` and, for ``server import``,
``invaders.tracking.store_copy``, MLflow's ``server`` and ``models serve``, a script of ``benchmarks/``): this
module only finds it. The Makefile's targets call these jobs; the older commands ``invaders-ship``,
``invaders-experiment`` and ``invaders-sweep`` run the same entry points. Nothing is imported before a job is
chosen, so ``invaders --help`` starts without TensorFlow. A bad argument is one line,
``invaders JOB: error: ...``, and exit code 2.
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
def _one_line_errors(prog: str, *names: str) -> Iterator[None]:
    """While a job's own parser runs: errors as one line, and ``prog`` (``invaders ship``) in its usage, for a
    parser made without prog=, one named after its module (``python -m invaders.tracking.server``) and one
    named any of ``names`` (a script's file name, which ``runpy.run_path`` puts in argv[0])."""
    error, init, argv0 = argparse.ArgumentParser.error, argparse.ArgumentParser.__init__, sys.argv[0]

    def named(self, *args, **kwargs) -> None:  # the innermost job's name first (server import in server)
        if str(kwargs.get("prog", "")).startswith("python -m "):
            kwargs["prog"] = prog
        init(self, *args, **kwargs)
        if self.prog in names:
            self.prog = prog  # before any add_subparsers, which names each command after it

    argparse.ArgumentParser.error, argparse.ArgumentParser.__init__ = _one_line_error, named
    sys.argv[0] = prog  # what argparse calls a parser made without prog=
    try:
        yield
    finally:
        argparse.ArgumentParser.error, argparse.ArgumentParser.__init__, sys.argv[0] = error, init, argv0


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
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri()
    command = ["models", "serve", "-m", arguments.agent, "--env-manager", "local"]
    command += ["--host", "127.0.0.1", "--port", str(arguments.port)]
    _exec_mlflow(command)


def _exec_mlflow(command: list[str]) -> None:
    """Become ``python -m mlflow COMMAND`` of this environment (MLflow starts ``uvicorn`` by name: its bin first)."""
    environment = {
        **os.environ,
        "PATH": os.pathsep.join((str(Path(sys.executable).parent), os.environ.get("PATH", ""))),
    }
    os.execve(sys.executable, [sys.executable, "-m", "mlflow", *command], environment)


def _ui(argv: list[str]) -> None:
    parser = _Parser(
        prog=f"{PROG} ui",
        description="The MLflow UI of this checkout's local store (mlflow.db, artifacts in mlruns/) on 127.0.0.1; "
        "prints the experiment's page first (MLflow has no landing-page option). The team server has its own UI.",
    )
    parser.add_argument("--port", type=int, default=5000, help="default: %(default)s")
    arguments = parser.parse_args(argv)
    if not 1 <= arguments.port <= 65535:
        parser.error(f"--port {arguments.port}: a TCP port, 1-65535")
    from invaders.config import load_params
    from invaders.pipeline import exit_on_user_error
    from invaders.repository import project_root
    from invaders.tracking.store import open_experiment

    root = project_root()
    store = f"sqlite:///{root / 'mlflow.db'}"  # the store `make run` writes without MLFLOW_TRACKING_URI
    with exit_on_user_error(f"{PROG} ui"):
        experiment = open_experiment(store, load_params(root / "params.yaml").tracking.experiment, root)
    print(f"open http://127.0.0.1:{arguments.port}/#/experiments/{experiment}", flush=True)
    command = ["server", "--backend-store-uri", store, "--default-artifact-root", str(root / "mlruns")]
    _exec_mlflow([*command, "--host", "127.0.0.1", "--port", str(arguments.port)])


SERVER_OPTIONS = ("--dir", "--login")  # the server parser's options before its command, each with a value
IMPORT_SUMMARY = "copy a local MLflow store's runs and registered models into the server"


def _server(argv: list[str]) -> int | None:
    """The commands of ``invaders.tracking.server``, and ``import`` (``invaders.tracking.store_copy``)."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):  # the options before the command
        index += 2 if argv[index] in SERVER_OPTIONS else 1
    if index < len(argv) and argv[index] == "import":
        leading = _Parser(prog=f"{PROG} server", add_help=False)
        leading.add_argument("--dir")
        options, unknown = leading.parse_known_args(argv[:index])
        if unknown:  # --login: the copy goes in with MLFLOW_TRACKING_URI's login, or else as the admin
            leading.error(f"{' '.join(unknown)}: not an option of import (only --dir)")
        rest = [*argv[index + 1 :], *(["--server-dir", options.dir] if options.dir else [])]
        with _one_line_errors(f"{PROG} server import"):
            return _entry_point("invaders.tracking.store_copy:main")(rest)
    try:
        return _entry_point("invaders.tracking.server:main")(argv)
    finally:
        if index == len(argv) and {"-h", "--help"} & set(argv):  # after its help: the command it does not know
            print(f"\nand: import DB   {IMPORT_SUMMARY} ({PROG} server import --help)")


BENCHMARKS = {  # name: (the script in the checkout's benchmarks/, what it measures)
    "speed": ("bench.py", "training speed and memory of params.yaml's setup on this machine (make bench)"),
    "peers": ("peers.py", "this project's training speed against Stable-Baselines3's DQN (make bench-peers)"),
    "server": ("server_bench.py", "the team server: start, logging latency, memory; --backup (make server-bench)"),
    "ray": ("ray_bench.py", "sweeps on Ray: start-up, memory, one tiny trial through Tune"),
    "notebook": ("kerasrl_notebook.py", "where a step of the notebook preset's keras-rl2 run goes"),
}


def _bench(argv: list[str]) -> None:
    parser = _Parser(
        prog=f"{PROG} bench",
        usage=f"{PROG} bench [BENCHMARK] [ARGUMENTS]   ({PROG} bench BENCHMARK --help: its own arguments)",
        description="A script of the checkout's benchmarks/, run in this process; BENCHMARK is speed by default.",
        epilog="benchmarks:\n" + "\n".join(f"  {name:<8}  {what}" for name, (_, what) in BENCHMARKS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if argv[:1] in (["-h"], ["--help"]):
        parser.print_help()
        raise SystemExit(0)
    name, rest = (argv[0], argv[1:]) if argv and not argv[0].startswith("-") else ("speed", argv)
    if name not in BENCHMARKS:
        parser.error(f"no benchmark {name!r}; the benchmarks: {', '.join(BENCHMARKS)}")
    script = Path("benchmarks", BENCHMARKS[name][0])
    if not script.is_file():
        parser.error(f"{script} not found in {Path.cwd()}: run it in the project's checkout")
    # As `python benchmarks/SCRIPT`: the script reads sys.argv (run_path puts the script's path first, which a
    # re-run under --max-isa needs) and imports its neighbours; in this process its parser errors are one line.
    sys.argv[1:] = rest
    sys.path.insert(0, str(script.parent.resolve()))
    with _one_line_errors(f"{PROG} bench {name}", script.name):
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
        _stage("report", "invaders.steps.report", "REPORT", "compare the evaluations its DVC deps hold (results/)"),
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
    "ui": Job("the MLflow UI of the local store (mlflow.db) on 127.0.0.1:5000", _ui),
    "sweep": Job("run a sweep file on Ray Tune", _entry_point("invaders.sweeps.driver:main")),
    "server": Job(
        "the team's MLflow server: start, stop, status, users, backup, restore, upgrade, supervise, import", _server
    ),
    "bench": Job("a benchmark of the checkout's benchmarks/: speed (default), peers, server, ray, notebook", _bench),
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
