"""Concurrent experiments and faults, with real processes: stages racing on a new MLflow store, queued `dvc exp run`s
two at a time, a stage killed (SIGKILL, SIGTERM, Ctrl-C) mid-training, a corrupt weights file, and an MLflow server.

Every stage run here is tiny; TensorFlow's import (~8 s) dominates each stage.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest
from repo_copy import REPO, environment, make_repo, run, write_params

EXPERIMENT = "space-invaders-dqn"
PYTHON = sys.executable


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def sqlite_uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def wait_for(
    condition: Callable, timeout: float, what: str, interval: float = 1.0, alive: subprocess.Popen | None = None
):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds or if ``alive`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        if alive is not None and alive.poll() is not None:
            pytest.fail(f"process exited ({alive.returncode}) before {what}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    """End a process started here in its own session, and everything it started."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=30)


def stage_env(repo: Path, **extra: str) -> dict:
    return {**environment(repo), "PYTHONPATH": str(repo / "src"), **extra}


def runs_of(client, stage: str, experiment: str = EXPERIMENT) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs(
        [found.experiment_id], filter_string=f"tags.`invaders.stage` = '{stage}'", max_results=1000
    )


def tree_digest(root: Path, folders: list[str]) -> dict[str, str]:
    """Every file under ``folders`` (hidden ones too), by path, with its content hash."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


def leftovers(root: Path, folders: list[str]) -> list[str]:
    """Staging and retired copies (``.name.XXXX.tmp``, ``.name.old``) that an interrupted atomic write leaves."""
    return [
        str(path.relative_to(root))
        for folder in folders
        if (root / folder).is_dir()
        for path in (root / folder).iterdir()
        if path.name.startswith(".") and path.name.endswith((".tmp", ".old"))
    ]


# --- Stages that open a new store at the same moment ------------------------------------------------------------

RACER = """
import sys, time
from pathlib import Path
import mlflow.tracking  # imported before the start line, so that the racers really start together
from invaders.tracking.stage_run import StageRun
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.002)
with StageRun(sys.argv[3], sys.argv[4]) as run:
    run.log_metrics({"x": 1.0})
"""


def race_stage_runs(folder: Path, env: dict, experiment: str, count: int = 3) -> list[subprocess.CompletedProcess]:
    """Start ``count`` processes that each open a StageRun at the same instant (after their imports)."""
    go = folder / "go"
    processes = []
    try:
        for index in range(count):
            ready = folder / f"ready.{index}"
            command = [PYTHON, "-c", RACER, str(ready), str(go), f"stage{index}", experiment]
            processes.append(
                subprocess.Popen(
                    command,
                    cwd=folder,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )
        wait_for(lambda: all((folder / f"ready.{i}").exists() for i in range(count)), 120, "the racers' imports", 0.1)
        go.touch()
        outcomes = []
        for process in processes:
            stdout, stderr = process.communicate(timeout=120)
            outcomes.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
        return outcomes
    finally:
        for process in processes:
            stop(process)


def check_race(outcomes: list[subprocess.CompletedProcess], uri: str, experiment: str) -> None:
    for outcome in outcomes:
        assert outcome.returncode == 0, outcome.stderr[-3000:]
    client = client_for(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=100)
    assert sorted(run.data.tags["invaders.stage"] for run in runs) == [f"stage{i}" for i in range(len(outcomes))]
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert client.search_runs(["0"]) == [], "runs filed under Default"


def test_stages_creating_the_sqlite_store_at_once(tmp_path):
    """Guards the store lock around the first MlflowClient: creating the client migrates a new sqlite DB, and
    concurrent migrations leave it broken ('table _alembic_tmp_... already exists')."""
    env = stage_env(REPO, DVC_ROOT=str(tmp_path))
    outcomes = race_stage_runs(tmp_path, env, EXPERIMENT)
    check_race(outcomes, sqlite_uri(tmp_path), EXPERIMENT)


# --- Queued experiments, two at a time ---------------------------------------------------------------------------

QUEUED = {"q1": 300, "q2": 400, "q3": 500}  # experiment name: train.steps


def queue_states(repo: Path, env: dict) -> dict[str, str]:
    """Experiment name -> status (Queued, Running, Success, Failed) from `dvc queue status`."""
    output = run(["dvc", "queue", "status"], repo, env)
    states = {}
    for line in output.splitlines():
        words = line.split()
        for name in QUEUED:
            if name in words:
                states[name] = words[-1]
    return states


def queue_finished(repo: Path, env: dict) -> dict[str, str] | None:
    states = queue_states(repo, env)
    return states if len(states) == len(QUEUED) and set(states.values()) <= {"Success", "Failed"} else None


@pytest.mark.e2e
def test_queued_experiments_run_two_at_a_time_into_the_repository_store(tmp_path):
    """Guards the store path from DVC_ROOT (queued runs execute in .dvc/tmp/exps and would lose a relative
    sqlite:///mlflow.db), the store lock, and the explicit experiment id (no run in Default)."""
    repo = make_repo(tmp_path / "repo")
    env = environment(repo)
    assert not (repo / "mlflow.db").exists()
    for name, steps in QUEUED.items():
        run(["dvc", "exp", "run", "--queue", "-n", name, "-S", f"train.steps={steps}", "evaluate"], repo, env)
    try:
        run(["dvc", "queue", "start", "-j", "2"], repo, env)
        states = wait_for(lambda: queue_finished(repo, env), 480, "the queued experiments", interval=10)
        logs = {
            name: subprocess.run(["dvc", "queue", "logs", name], cwd=repo, env=env, capture_output=True, text=True)
            for name in QUEUED
        }
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=repo, env=env, capture_output=True, timeout=120)
    for name, log in logs.items():
        text = log.stdout + log.stderr
        assert states[name] == "Success", f"{name}: {states[name]}\n{text[-3000:]}"
        assert "database is locked" not in text, name
        assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"
    assert not list((repo / ".dvc" / "tmp").rglob("mlflow.db")), "a run went to a store inside the temporary copy"

    assert (repo / "mlflow.db").is_file(), "the runs did not reach the repository's store"
    client = client_for(sqlite_uri(repo))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert {run.info.status for run in runs} == {"FINISHED"}
    assert client.search_runs(["0"]) == [], "runs filed under Default"
    spans = sorted((run.info.start_time, run.info.end_time, run.data.tags["dvc.exp_name"]) for run in runs)
    overlaps = [(a[2], b[2]) for a, b in itertools.pairwise(spans) if a[2] != b[2] and b[0] < a[1]]
    assert overlaps, "the experiments never ran at the same time: nothing concurrent was tested"
    for name, steps in QUEUED.items():
        mine = {run.data.tags["invaders.stage"]: run for run in runs if run.data.tags["dvc.exp_name"] == name}
        # build-model reads no train.steps: after the first experiment built it, DVC's run-cache restores it
        assert sorted(mine) in (["build-model", "evaluate", "train"], ["evaluate", "train"]), name
        train, evaluate = mine["train"], mine["evaluate"]
        assert train.data.params["train.steps"] == str(steps)
        assert evaluate.data.tags["invaders.train_run_id"] == train.info.run_id, f"{name} evaluated another model"
        assert train.info.artifact_uri.startswith((repo / "mlruns").as_uri()), train.info.artifact_uri
        artifacts = {item.path for item in client.list_artifacts(train.info.run_id, "model")}
        assert {"model/agent.json", "model/spec.json", "model/weights.npz"} <= artifacts
        assert (repo / "mlruns" / EXPERIMENT / train.info.run_id / "artifacts/model/weights.npz").is_file()
    shown = run(["dvc", "exp", "show", "--json"], repo, env)
    for name in QUEUED:
        assert f'"{name}"' in shown


# --- A stage killed mid-way -------------------------------------------------------------------------------------

FAULT_OUTPUTS = ["models/trained", "results/train"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A repository where `dvc repro train` has completed once (tiny)."""
    repo = make_repo(tmp_path_factory.mktemp("faults"), {"train": {"steps": 300}})
    run(["dvc", "repro", "train"], repo, environment(repo))
    return repo


@contextmanager
def long_params(repo: Path, overrides: dict):
    """params.yaml asks for minutes of work, then goes back to what it was."""
    original = (repo / "params.yaml").read_text()
    write_params(repo, overrides)
    try:
        yield
    finally:
        (repo / "params.yaml").write_text(original)


def long_training(seed: int) -> dict:
    """Each test trains with its own seed, so that it never resumes another test's checkpoint (a checkpoint is only
    used with the same learning params)."""
    return {"train": {"steps": 200_000, "seed": seed}}


def running_run(client, stage: str, pid: int | None = None):
    """The RUNNING run of ``stage`` whose process (``pid`` if given) is alive, if any."""
    for found in runs_of(client, stage):
        tagged = found.data.tags.get("invaders.pid", "")
        if found.info.status == "RUNNING" and tagged.isdigit() and (pid is None or int(tagged) == pid):
            if Path(f"/proc/{tagged}").exists():
                return found
    return None


@pytest.mark.e2e
def test_sigkill_mid_training_loses_no_previous_output_and_the_next_stage_closes_its_run(trained):
    """Guards io.atomic_directory/atomic_path in stages/train.py (nothing is published before training ends), that
    the previous outputs come back from DVC (no output is persistent: DVC removes them before a stage runs, and its
    run-cache restores them), and StageRun._close_orphans (a run whose process died stays RUNNING until the next
    stage start marks it KILLED)."""
    repo, env = trained, environment(trained)
    before = tree_digest(repo, FAULT_OUTPUTS)
    assert "models/trained/weights.npz" in before and "results/train/metrics.json" in before
    client = client_for(sqlite_uri(repo))
    with open(repo / "dvc-kill.log", "w") as log, long_params(repo, long_training(seed=101)):
        dvc = subprocess.Popen(
            ["dvc", "repro", "train"], cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            killed = wait_for(lambda: running_run(client, "train"), 120, "the train run", alive=dvc)
            time.sleep(4)  # into the training loop
            assert dvc.poll() is None, "training ended before it was killed"
            os.kill(int(killed.data.tags["invaders.pid"]), signal.SIGKILL)
            assert dvc.wait(timeout=60) != 0
        finally:
            stop(dvc)
    assert leftovers(repo, ["models", "results", "results/train"]) == [], "nothing half-written"
    assert client.get_run(killed.info.run_id).info.status == "RUNNING", "nothing can close it yet"
    restored = run(["dvc", "repro", "train"], repo, env)  # the params of the finished run again: from the run-cache
    assert "skipping run" in restored or "didn't change" in restored, restored
    assert tree_digest(repo, FAULT_OUTPUTS) == before, "the previous outputs did not come back"
    status = run(["dvc", "status", "train"], repo, env)
    assert "changed" not in status, f"DVC sees the killed stage's outputs as changed:\n{status}"

    run(["dvc", "repro", "baseline"], repo, env)  # the next stage start
    assert client.get_run(killed.info.run_id).info.status == "KILLED"
    newest = max(runs_of(client, "baseline"), key=lambda found: found.info.start_time)
    assert newest.info.status == "FINISHED"


SIGNALLED = {
    "train-SIGTERM": ("train", signal.SIGTERM, long_training(seed=201)),
    "train-Ctrl-C": ("train", signal.SIGINT, long_training(seed=202)),
    "baseline-SIGTERM": ("baseline", signal.SIGTERM, {"evaluation": {"episodes": 1_000}}),
}


@pytest.mark.e2e
@pytest.mark.parametrize(("stage_name", "signum", "overrides"), list(SIGNALLED.values()), ids=list(SIGNALLED))
def test_terminated_stage_marks_its_run_killed_and_fails(trained, stage_name, signum, overrides):
    """Guards the signal handling of a stage: in training the trainer's own handler (stop between two vector steps,
    then KeyboardInterrupt), elsewhere pipeline._terminate (SIGTERM unwinds like Ctrl-C); StageRun.__exit__ (KILLED on
    KeyboardInterrupt or SystemExit) and run_stage's non-zero exit."""
    repo = trained
    client = client_for(sqlite_uri(repo))
    script = f"stages/{stage_name}.py"
    with open(repo / "stage.err", "w+") as errors, long_params(repo, overrides):
        stage = subprocess.Popen(
            [PYTHON, script],
            cwd=repo,
            env=stage_env(repo),
            stdout=subprocess.DEVNULL,
            stderr=errors,
            start_new_session=True,
        )
        try:
            started = wait_for(
                lambda: running_run(client, stage_name, stage.pid), 120, f"the {stage_name} run", alive=stage
            )
            time.sleep(4)  # into the work
            assert stage.poll() is None
            if signum == signal.SIGINT:
                os.killpg(stage.pid, signum)  # Ctrl-C reaches the terminal's whole process group
            else:
                os.kill(stage.pid, signum)
            try:
                returncode = stage.wait(timeout=240)  # generous: a loaded machine, not a measurement
            except subprocess.TimeoutExpired:
                returncode = None  # still running: the assertion below shows its stderr
        finally:
            stop(stage)
        errors.seek(0)
        stderr = errors.read()
    assert returncode in (130, 128 + signum), f"exit {returncode}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    assert client.get_run(started.info.run_id).info.status == "KILLED"
    assert leftovers(repo, ["models", "results", "results/train", "results/baseline"]) == []


def foreign_zip(original: bytes) -> bytes:
    """A zip archive that is not an .npz, like a Keras `.keras` file renamed."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
    return buffer.getvalue()


CORRUPTIONS = {
    "truncated": lambda original: original[: len(original) // 2],
    "git-lfs-pointer": lambda original: b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n",
    "foreign-zip": foreign_zip,
}
# TensorFlow's own start-up lines (absl), printed whatever TF_CPP_MIN_LOG_LEVEL says.
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::|[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] )")


@pytest.mark.e2e
@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_weights_fail_in_one_line_naming_the_file(trained, kind):
    """Guards networks.load_weight_arrays's checks and run_stage's one-line UserError exit (code 2)."""
    repo = trained
    weights = repo / "models/trained/weights.npz"
    original = weights.read_bytes()
    weights.unlink()  # a new file: never write through a link into DVC's cache
    weights.write_bytes(CORRUPTIONS[kind](original))
    try:
        done = subprocess.run(
            [PYTHON, "stages/evaluate.py"], cwd=repo, env=stage_env(repo), capture_output=True, text=True, timeout=300
        )
    finally:
        weights.unlink()
        weights.write_bytes(original)
    lines = [line for line in done.stderr.splitlines() if line.strip() and not TF_NOISE.match(line)]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("evaluate: error: models/trained/weights.npz:"), done.stderr[-3000:]
    client = client_for(sqlite_uri(repo))
    assert max(runs_of(client, "evaluate"), key=lambda run: run.info.start_time).info.status == "FAILED"


# --- A real MLflow server ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on a free port with its own sqlite store and artifact root; stopped at the end."""
    root = tmp_path_factory.mktemp("server")
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        str(Path(PYTHON).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root", str(root / "mlruns"),
        "--host", "127.0.0.1", "--port", url.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    with open(root / "server.log", "w") as log:
        server = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: healthy(url), 120, f"{url}/health", alive=server)
        yield url, root
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stop(server)


@pytest.mark.e2e
def test_stages_log_through_an_mlflow_server(mlflow_server, tmp_path):
    """Guards tracking_uri (MLFLOW_TRACKING_URI wins over the repo's sqlite file), check_store's /health probe,
    and artifacts logged through the server's artifact root."""
    url, server_root = mlflow_server
    repo = make_repo(tmp_path / "repo")
    env = {**environment(repo), "MLFLOW_TRACKING_URI": url}
    run(["dvc", "repro", "baseline", "build-model"], repo, env)
    assert not (repo / "mlflow.db").exists(), "logged to the local store instead of the server"
    assert [path.name for path in (repo / "mlruns").iterdir() if path.name != ".gitkeep"] == []

    client = client_for(url)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    commit = run(["git", "rev-parse", "HEAD"], repo, env).strip()
    expected = {"baseline": ["episodes.csv", "metrics.json"], "build-model": ["model"]}
    for stage, artifacts in expected.items():
        runs = runs_of(client, stage)
        assert len(runs) == 1, stage
        found = runs[0]
        assert found.info.status == "FINISHED"
        assert found.data.tags["dvc.stage"] == stage
        assert found.data.tags["dvc.exp_name"] == "workspace"
        assert found.data.tags["mlflow.source.git.commit"] == commit
        assert sorted(item.path for item in client.list_artifacts(found.info.run_id)) == artifacts
    build = runs_of(client, "build-model")[0]
    assert build.data.metrics["parameters"] > 0
    downloaded = Path(client.download_artifacts(build.info.run_id, "model/weights.npz", str(tmp_path)))
    assert downloaded.read_bytes() == (repo / "models/initial/weights.npz").read_bytes()
    assert list((server_root / "mlruns").rglob("weights.npz")), "artifacts are not in the server's artifact root"
    assert client.search_runs(["0"]) == [], "runs filed under Default"


@pytest.mark.e2e
def test_stages_creating_the_experiment_on_a_server_at_once(mlflow_server, tmp_path):
    """Guards open_experiment against a concurrent create over HTTP (no file lock there): the loser must use the
    winner's experiment instead of failing with RESOURCE_ALREADY_EXISTS."""
    url, _ = mlflow_server
    env = stage_env(REPO, DVC_ROOT=str(tmp_path), MLFLOW_TRACKING_URI=url)
    outcomes = race_stage_runs(tmp_path, env, "created-at-once", count=4)
    check_race(outcomes, url, "created-at-once")
