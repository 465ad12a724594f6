"""Sweeps on Ray Tune: the sweep file's checks, the runs left behind, and a real two-node Ray cluster on
loopback addresses (token authentication) running a tiny sweep on the real emulator, one trial's worker
killed mid-training."""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from repo_copy import TINY

from invaders.config import ConfigError, read_params_file
from invaders.names import Metric, Tag
from invaders.sweeps.driver import best_configuration, reproduce_command
from invaders.sweeps.spec import load_sweep

TINY_PARAMS = {f"{section}.{key}": value for section, values in TINY.items() for key, value in values.items()}
TINY_PARAMS.pop("train.steps")
TINY_PARAMS.pop("report.bootstrap_samples")


def sweep_file(folder: Path, params: dict | None = None, **document) -> Path:
    """A sweep of tiny trials (TINY's budgets) with ``params`` and the ``document``'s other keys."""
    path = folder / "sweep.yaml"
    document = {"name": "tiny", "steps": 600, "seeds": [0, 1], "params": {**TINY_PARAMS, **(params or {})}, **document}
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture(scope="module")
def raw_params():
    return read_params_file(REPO / "params.yaml")


def test_a_sweep_file_reads_into_trials(tmp_path, raw_params):
    spec = load_sweep(
        sweep_file(
            tmp_path,
            search={"train.learning_rate": {"grid": [1.0e-4, 2.5e-4]}, "train.gamma": {"uniform": [0.9, 0.99]}},
            params={"train.checkpoint_interval": 200},
            samples=2,
            early_stopping={"grace_steps": 200},
        ),
        raw_params,
    )
    assert spec.trials == 2 * 2 * 2  # grid x samples x seeds
    assert spec.fixed == {**TINY_PARAMS, "train.checkpoint_interval": 200, "train.steps": 600}
    assert spec.early_stopping.grace_steps == 200 and spec.early_stopping.reduction_factor == 3


@pytest.mark.parametrize("path", sorted((REPO / "sweeps").glob("*.yaml")), ids=lambda path: path.name)
def test_the_projects_sweep_files_read_against_params_yaml(path, raw_params):
    load_sweep(path, raw_params)  # every configuration they can produce builds valid params


def test_the_qr_lever_sweep_compares_the_default_head_with_qr_dqn_on_three_seeds_on_validation(raw_params):
    spec = load_sweep(REPO / "sweeps" / "lever-qr.yaml", raw_params)
    assert [(d.key, d.domain, d.values) for d in spec.search] == [("model.quantiles", "grid", (0, 200))]
    assert raw_params["model"]["quantiles"] == 0, "the grid's first point is the default"
    assert spec.seeds == (0, 1, 2) and spec.trials == 6 and spec.steps == 100_000
    assert spec.params == {"evaluation.split": "validation"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"serch": {}}, "serch: unknown sweep key; did you mean search?"),
        ({"steps": 0}, "steps = 0: must be a whole number >= 1"),
        ({"seeds": [1, 1]}, "seeds = [1, 1]: must be a list of different whole numbers"),
        ({"search": {"train.lr": {"grid": [1]}}}, "train.lr: unknown key; allowed: backend, steps,"),
        ({"search": {"train.gamma": {"grid": [0.99, 1.5]}}}, "train.gamma = 1.5: must be > 0.0 and <= 1.0"),
        ({"search": {"train.gamma": {"normal": [0, 1]}}}, "search.train.gamma = {'normal': [0, 1]}: must be one of"),
        (
            {"search": {"train.learning_rate": {"loguniform": [0, 1]}}},
            "must be [low, high] numbers with 0 < low < high",
        ),
        ({"params": {"train.seed": 3}}, "train.seed: set by the sweep's seeds key"),
        ({"metric": "loss"}, "metric = 'loss': allowed: score_mean, score_median, score_ci_low"),
        ({"early_stopping": {"grace_steps": 600}}, "early_stopping.grace_steps = 600: must be below steps (600)"),
        ({"search": {"train.n_step": {"uniform": [1, 5]}}}, "search.train.n_step: a whole number; list its values"),
        ({"search": {"tracking.experiment": {"grid": ["a", "b"]}}}, "search.tracking.experiment: where runs are"),
        (
            {"early_stopping": {"grace_steps": 300}, "params": {"train.checkpoint_interval": 1000}},
            "early_stopping: no training checkpoint between grace_steps (300) and steps (600)",
        ),
        # valid in params.yaml; not with the sweep's budget of 600 agent steps
        (
            {"search": {"train.batch_size": {"grid": [32, 4000]}}},
            "train.warmup_fraction = 0.33: leaves 402 of train.steps (600) to learn in; at least train.batch_size "
            "(4000) are needed (searching train.batch_size=4000)",
        ),
    ],
)
def test_a_bad_sweep_file_is_one_line_naming_the_file(tmp_path, raw_params, document, message):
    path = sweep_file(tmp_path, **document)
    with pytest.raises(ConfigError) as raised:
        load_sweep(path, raw_params)
    assert str(raised.value).startswith(f"{path}: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_command_says_a_bad_file_in_one_line_before_ray_starts(tmp_path):
    path = sweep_file(tmp_path, search={"train.gamma": {"grid": [2.0]}})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "invaders.sweeps.driver", str(path), "--storage", str(tmp_path / "results")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "token")},
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"sweep: error: {path}: train.gamma = 2.0: must be > 0.0 and <= 1.0 (searching train.gamma=2.0)"
    ]
    assert time.monotonic() - started < 30 and not (tmp_path / "results").exists()


def test_a_cluster_address_nothing_answers_is_one_line_at_once(tmp_path):
    token = tmp_path / "token"
    token.write_text("0" * 64)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "invaders.sweeps.driver", str(sweep_file(tmp_path)), "--storage", str(tmp_path / "r")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "RAY_ADDRESS": "127.0.0.9:1", "RAY_AUTH_TOKEN_PATH": str(token)},
    )
    assert done.returncode == 2 and time.monotonic() - started < 60
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("sweep: error: RAY_ADDRESS = 127.0.0.9:1: no Ray cluster answers there (")


def test_the_best_configuration_is_the_best_mean_over_seeds_and_dvc_reproduces_it(tmp_path, raw_params):
    spec = load_sweep(
        sweep_file(tmp_path, params={"train.n_step": 1}, search={"train.learning_rate": {"grid": [1.0e-4, 1.0e-3]}}),
        raw_params,
    )
    table = pd.DataFrame(
        {
            "train.learning_rate": [1.0e-4, 1.0e-4, 1.0e-3, 1.0e-3, 1.0e-3],
            "seed": [0, 1, 0, 1, 2],
            "status": ["done", "done", "done", "done", "stopped early"],
            Metric.SCORE_MEAN: [200.0, 100.0, 160.0, 150.0, None],
        }
    )
    best = best_configuration(table, spec)
    assert best == {Metric.SCORE_MEAN: 155.0, "seeds": 2, "overrides": {"train.learning_rate": 1.0e-3}}
    command = reproduce_command(spec, best["overrides"])
    assert command.startswith("dvc exp run -n tiny-best -S env.max_episode_frames=1500 ")
    assert "-S train.n_step=1 " in command and command.endswith(" -S train.steps=600 -S train.learning_rate=0.001")


def test_closing_a_sweep_ends_what_killed_trials_left_running(tmp_path, monkeypatch):
    from invaders.tracking.store import client_for, tracking_uri
    from invaders.tracking.sweep_runs import close_trials, open_sweep_run, open_trial_run

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    sweep = open_sweep_run("unit-sweeps", "tiny", sweep_file(tmp_path), tmp_path, None)
    client = client_for(tracking_uri())
    trials, stages = {}, {}
    for trial_id in ("early_00000", "lost_00001"):
        trials[trial_id] = open_trial_run("unit-sweeps", sweep, trial_id, trial_id, {"train.seed": 0}, "127.0.0.2")
        experiment = client.get_run(trials[trial_id]).info.experiment_id
        tags = {Tag.PARENT_RUN_ID: trials[trial_id], Tag.STAGE: "train"}
        stages[trial_id] = client.create_run(experiment, tags=tags).info.run_id

    close_trials(sweep, {"early_00000"}, "FAILED", sweep_status="FINISHED")

    early, lost = (client.get_run(trials[trial_id]) for trial_id in ("early_00000", "lost_00001"))
    assert early.info.status == "FINISHED" and early.data.tags[Tag.STOPPED_EARLY] == "true"
    assert lost.info.status == "FAILED" and Tag.STOPPED_EARLY not in lost.data.tags
    assert [client.get_run(stage).info.status for stage in stages.values()] == ["KILLED", "KILLED"]
    assert client.get_run(sweep).info.status == "FINISHED"


def _persisted(folder: Path, steps: int | None) -> Path:
    """A trial's workspace as it hands it over: the initial network and, with ``steps``, a training checkpoint."""
    from invaders.pipeline import Workspace
    from invaders.sweeps.trial import _HANDED_OVER, _file_sizes

    workspace = Workspace(folder)
    workspace.initial.mkdir(parents=True)
    (workspace.initial / "weights.npz").write_bytes(b"initial")
    if steps is not None:
        workspace.checkpoints.save(steps, {"checkpoint.steps": steps, "values": np.arange(steps)})
    (folder / _HANDED_OVER).write_text(json.dumps(_file_sizes(folder)))
    return folder


def test_a_restarted_trial_restores_the_furthest_complete_checkpoint_its_attempts_left(tmp_path):
    from invaders.pipeline import Workspace
    from invaders.sweeps.trial import _restore

    trial_folder = tmp_path / "storage" / "run_trial_00000"
    _persisted(trial_folder / "checkpoint_000000", None)  # after build-model: what a killed driver recorded
    _persisted(trial_folder / "checkpoint_000001", 300)
    cut_short = _persisted(trial_folder / "checkpoint_000002", 600)  # the copy a dying trial did not finish
    (Workspace(cut_short).checkpoints.latest_with_folder()[0] / "values.npy").unlink()

    root = tmp_path / "restored"
    _restore(root, trial_folder, [])
    assert (root / "models/initial/weights.npz").is_file()
    assert Workspace(root).checkpoints.latest()["checkpoint.steps"] == 300

    left_behind = _persisted(tmp_path / "invaders-trial-00000-killed", 900)  # the killed attempt's own workspace
    root = tmp_path / "restored-on-the-same-node"
    _restore(root, trial_folder, [left_behind])
    assert Workspace(root).checkpoints.latest()["checkpoint.steps"] == 900


def test_the_guard_stops_what_it_started_when_the_drivers_pipe_closes():
    import psutil

    # A stand-in for `ray start`: a child in the guard's process group and a grandchild in a group of its own.
    command = [
        sys.executable,
        "-c",
        "import subprocess, time; subprocess.Popen(['sleep', '300'], start_new_session=True); time.sleep(300)",
    ]
    guard = subprocess.Popen(
        [sys.executable, "-m", "invaders.sweeps.local_ray", *command], stdin=subprocess.PIPE, process_group=0
    )
    started = []
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(guard.pid).children(recursive=True)) < 2:
            assert time.monotonic() < deadline, "the stand-in did not start"
            time.sleep(0.1)
        started = psutil.Process(guard.pid).children(recursive=True)
        guard.stdin.close()  # what the driver's death does
        guard.wait(timeout=30)
        assert not [process.pid for process in started if process.is_running() and process.status() != "zombie"]
    finally:
        guard.kill()
        for process in started:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass


# --- a real Ray cluster -----------------------------------------------------------------------------------


def _ray(*args: str, env: dict) -> subprocess.Popen:
    """``ray start --block``: the node's processes live as long as this one, in its own process group."""
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _stop(process: subprocess.Popen) -> None:
    """Stop a node by its process group (ray start's children: GCS, raylet, workers)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)  # a worker node's `ray start --block` may ignore it: then SIGKILL the group
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture
def ray_cluster(tmp_path):
    """A head on 127.0.0.2 and a worker node on 127.0.0.3, one CPU each, both requiring the token."""
    token = tmp_path / "ray_token"
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    port = 6390 + os.getpid() % 500
    node = ["--num-cpus=1", f"--memory={3 * 2**30}", f"--object-store-memory={200 * 2**20}"]
    head = _ray("--head", "--node-ip-address=127.0.0.2", f"--port={port}", "--include-dashboard=false", *node, env=env)
    worker = None
    try:
        address = f"127.0.0.2:{port}"
        for _ in range(60):  # the worker node joins once the head's GCS answers
            if subprocess.run(["ray", "status", f"--address={address}"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(1)
        worker = _ray(f"--address={address}", "--node-ip-address=127.0.0.3", *node, env=env)
        yield {**env, "RAY_ADDRESS": address}
    finally:
        for process in (worker, head):
            if process is not None:
                _stop(process)


def _train_runs_with_a_checkpoint(database: Path) -> list:
    """The RUNNING train runs of the sweeps' experiment that have sent a checkpoint's metrics."""
    from invaders.tracking.store import client_for

    if not database.exists():
        return []
    client = client_for(f"sqlite:///{database}")  # under the store's lock: the sweep may be creating it
    experiment = client.get_experiment_by_name("space-invaders-dqn-sweeps")
    if experiment is None:
        return []
    runs = client.search_runs(
        [experiment.experiment_id], f"tags.`{Tag.STAGE}` = 'train' and attributes.status = 'RUNNING'"
    )
    return [run for run in runs if run.data.tags.get(Tag.METRICS_FLUSHED)]


def _kill_one_trial_after_its_first_checkpoint(database: Path, killed: list[str], stop: threading.Event) -> None:
    """Kill -9 the worker of the first train run that has sent a checkpoint's metrics; note its run id."""
    while not stop.is_set() and not killed:
        time.sleep(1)
        for run in _train_runs_with_a_checkpoint(database)[:1]:
            os.kill(int(run.data.tags[Tag.PID]), signal.SIGKILL)
            killed.append(run.info.run_id)


@pytest.mark.e2e
def test_a_sweep_on_two_nodes_gives_one_run_per_trial_and_survives_a_killed_worker(ray_cluster, tmp_path):
    path = sweep_file(
        tmp_path,
        steps=1000,
        params={"train.checkpoint_interval": 300},
        search={"train.learning_rate": {"grid": [1.0e-4]}},
    )
    database = tmp_path / "mlflow.db"
    env = {**ray_cluster, "MLFLOW_TRACKING_URI": f"sqlite:///{database}"}
    killed: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_one_trial_after_its_first_checkpoint, args=(database, killed, stop))
    watcher.start()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "invaders.sweeps.driver", str(path), "--storage", str(tmp_path / "results")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        stop.set()
        watcher.join()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert killed, "no training checkpoint was seen: the kill never happened"
    assert re.search(r"dvc exp run -n tiny-best .*-S train.steps=1000 -S train.learning_rate=0.0001", done.stdout)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{database}")
    experiment = client.get_experiment_by_name("space-invaders-dqn-sweeps").experiment_id
    runs = client.search_runs([experiment])
    by_parent: dict[str, list] = {}
    for run in runs:
        by_parent.setdefault(run.data.tags.get(Tag.PARENT_RUN_ID, ""), []).append(run)
    (sweep,) = by_parent[""]
    assert sweep.info.status == "FINISHED"
    trials = by_parent[sweep.info.run_id]
    assert sorted(run.data.params["train.seed"] for run in trials) == ["0", "1"], "one run per trial"
    assert all(run.info.status == "FINISHED" for run in trials)
    nodes = {node for run in trials for node in run.data.tags[Tag.TRIAL_NODE].split(",")}
    assert nodes == {"127.0.0.2", "127.0.0.3"}, "trials ran on both nodes"
    for trial in trials:
        assert Metric.SCORE_MEAN in trial.data.metrics
        stage_runs = by_parent[trial.info.run_id]
        trains = [run for run in stage_runs if run.data.tags[Tag.STAGE] == "train"]
        assert len(trains) == 1 and trains[0].info.status == "FINISHED", "a restarted trial continues its train run"
        steps = [metric.step for metric in client.get_metric_history(trains[0].info.run_id, Metric.TRAIN_UPDATES)]
        # the last vector step of 2 games may pass the 1,000-step budget by one agent step
        assert steps == sorted(set(steps)) and steps[-1] in (1000, 1001), "no metric step lost or duplicated"
    (restarted,) = [
        trial
        for trial in trials
        if by_parent[trial.info.run_id][0].info.run_id in killed
        or any(run.info.run_id in killed for run in by_parent[trial.info.run_id])
    ]
    assert restarted.data.tags[Tag.TRIAL_ATTEMPTS] == "2"
    # The killed attempt could not clean its workspace; the attempt after it did, and then its own.
    trial_ids = [trial.data.tags[Tag.TRIAL_ID] for trial in trials]
    left = [path for trial_id in trial_ids for path in Path(tempfile.gettempdir()).glob(f"invaders-trial-{trial_id}-*")]
    assert not left, left


def _sweep_driver(command: list[str], env: dict, log: Path) -> subprocess.Popen:
    """The sweep command in a session of its own, which holds every process of its local Ray instance."""
    with open(log, "w") as output:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=output, start_new_session=True)


def _alive_in_session(process: subprocess.Popen) -> list[int]:
    """The live processes of ``process``'s session (Ray's own and the trials' workers among them)."""
    import psutil

    alive = []
    for other in psutil.process_iter(["status"]):
        try:
            if os.getsid(other.pid) == process.pid and other.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(other.pid)
        except (ProcessLookupError, psutil.Error):
            pass
    return alive


def _session_gone(process: subprocess.Popen, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while _alive_in_session(process):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _kill_session(process: subprocess.Popen) -> None:
    for pid in _alive_in_session(process):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _ended(process: subprocess.Popen, log: Path, timeout: float, leftovers: str) -> str:
    """Wait for the driver to exit, its Ray processes gone with it (else stop them); its output."""
    try:
        process.wait(timeout=timeout)
        assert _session_gone(process), leftovers
    finally:
        _kill_session(process)
    return log.read_text()


def _local_sweep(tmp_path: Path, steps: int) -> tuple[list[str], dict, Path]:
    """The command and environment of a sweep of two tiny trials on a local Ray instance, and its store."""
    path = sweep_file(tmp_path, steps=steps, params={"train.checkpoint_interval": 300})
    database = tmp_path / "mlflow.db"
    token = tmp_path / "local_ray_token"
    token.write_text(os.urandom(32).hex())
    token.chmod(0o600)
    env = {
        **os.environ,
        "RAY_AUTH_TOKEN_PATH": str(token),
        "MLFLOW_TRACKING_URI": f"sqlite:///{database}",
        "RAY_DEDUP_LOGS": "0",  # every trial's lines in the driver's output, none folded into "[repeated 2x]"
    }
    env.pop("RAY_ADDRESS", None)  # a local Ray instance, started and stopped by the driver
    command = [sys.executable, "-m", "invaders.sweeps.driver", str(path), "--storage", str(tmp_path / "results")]
    return command, env, database


def _first_attempt_until_both_trials_checkpointed(command: list[str], env: dict, database: Path, log: Path):
    """Start the sweep and return once both trials are mid-training with a checkpoint's metrics sent."""
    first = _sweep_driver(command, env, log)
    try:
        deadline = time.monotonic() + 300
        while len(_train_runs_with_a_checkpoint(database)) < 2 and first.poll() is None:
            assert time.monotonic() < deadline, "no training checkpoints within 5 minutes"
            time.sleep(1)
        assert first.poll() is None, log.read_text()[-3000:]
    except BaseException:
        _kill_session(first)
        raise
    return first


def _check_resumed_sweep(database: Path, steps: int, attempts: int = 2) -> None:
    """One sweep run, one run per trial with ``attempts`` attempts, one FINISHED train run per trial, each step once."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{database}")
    experiment = client.get_experiment_by_name("space-invaders-dqn-sweeps").experiment_id
    by_parent: dict[str, list] = {}
    for run in client.search_runs([experiment]):
        by_parent.setdefault(run.data.tags.get(Tag.PARENT_RUN_ID, ""), []).append(run)
    (sweep,) = by_parent[""]  # the resumed sweep continues its run
    assert sweep.info.status == "FINISHED"
    trials = by_parent[sweep.info.run_id]
    assert sorted(run.data.params["train.seed"] for run in trials) == ["0", "1"], "one run per trial"
    assert all(run.info.status == "FINISHED" and Tag.STOPPED_EARLY not in run.data.tags for run in trials)
    for trial in trials:
        assert trial.data.tags[Tag.TRIAL_ATTEMPTS] == str(attempts)
        (train,) = [run for run in by_parent[trial.info.run_id] if run.data.tags[Tag.STAGE] == "train"]
        assert train.info.status == "FINISHED", "a resumed trial continues its train run"
        history = client.get_metric_history(train.info.run_id, Metric.TRAIN_UPDATES)
        assert [metric.step for metric in history] == list(range(200, steps + 1, 200)), "each step once"


def _resumed_trainings(output: str) -> set[str]:
    """The trial processes that resumed training from a training checkpoint (on one machine, each node's
    log monitor may forward a line of another's: counted by process)."""
    return set(re.findall(r"run_trial pid=(\d+)[^\n]*train: resuming from the checkpoint at step [1-9]", output))


@pytest.mark.e2e
def test_a_sweep_interrupted_then_its_driver_killed_resumes_each_time_with_the_same_command(tmp_path):
    command, env, database = _local_sweep(tmp_path, steps=800)
    first = _first_attempt_until_both_trials_checkpointed(command, env, database, tmp_path / "first.log")
    first.send_signal(signal.SIGINT)  # Ctrl-C
    output = _ended(first, tmp_path / "first.log", 120, "the interrupted driver left Ray processes behind")
    assert first.returncode == 130 and "\nsweep: interrupted\n" in output, output[-3000:]

    second_log = tmp_path / "second.log"
    second = _sweep_driver(command, env, second_log)
    try:
        deadline = time.monotonic() + 300
        while len(_resumed_trainings(second_log.read_text())) < 2:
            assert second.poll() is None and time.monotonic() < deadline, second_log.read_text()[-3000:]
            time.sleep(1)
        second.kill()  # kill -9 of the driver alone, both trials training: a closed session, an OOM kill
        second.wait()
        third = _sweep_driver(command, env, tmp_path / "third.log")
        output = _ended(third, tmp_path / "third.log", 900, "the driver left Ray processes behind")
        assert _session_gone(second), "the killed driver's Ray instance outlived it"
    finally:
        _kill_session(second)
    assert third.returncode == 0 and "resuming from" in output, output[-3000:]
    # Both trials continue from their newest training checkpoint, not from Tune's older one.
    assert len(_resumed_trainings(output)) == 2, output[-3000:]
    _check_resumed_sweep(database, steps=800, attempts=3)


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.e2e
def test_a_sweep_on_a_cluster_whose_driver_is_killed_resumes_there_and_its_trials_stop(ray_cluster, tmp_path):
    command, env, database = _local_sweep(tmp_path, steps=800)
    env = {**ray_cluster, "MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"], "RAY_DEDUP_LOGS": "0"}
    first = _first_attempt_until_both_trials_checkpointed(command, env, database, tmp_path / "first.log")
    trial_workers = [int(run.data.tags[Tag.PID]) for run in _train_runs_with_a_checkpoint(database)]
    first.kill()
    first.wait()
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in trial_workers):
        assert time.monotonic() < deadline, "the dead driver's trials still run a minute later"
        time.sleep(1)
    second = _sweep_driver(command, env, tmp_path / "second.log")
    output = _ended(second, tmp_path / "second.log", 900, "the driver left processes behind")
    assert second.returncode == 0 and "resuming from" in output, output[-3000:]
    assert len(_resumed_trainings(output)) == 2, output[-3000:]
    _check_resumed_sweep(database, steps=800)
    status = subprocess.run(
        ["ray", "status", f"--address={ray_cluster['RAY_ADDRESS']}"], env=ray_cluster, capture_output=True
    )
    assert status.returncode == 0, "the cluster stays"
