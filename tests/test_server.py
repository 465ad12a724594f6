"""The team server for real: PostgreSQL (Debian's package, as the postgres user) and `mlflow server --app-name
basic-auth` on it, started and stopped by `python -m invaders.tracking.server` (what `make server` runs).

One server per module, on 127.0.0.x, always with logins, stopped by its PIDs at the end. Stages run against it
with the standard MLFLOW_TRACKING_* variables and fail in one line when the login, the rights or the server
itself is wrong.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from repo_copy import REPO, environment, make_repo, run

EXPERIMENT = "space-invaders-dqn"
PYTHON = sys.executable
TF_NOISE = re.compile(r"^(WARNING: All log messages before absl::|[IWEF]\d{4} [\d:.]+ +\d+ \S+:\d+\] )")


def server_cli(folder: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [PYTHON, "-m", "invaders.tracking.server", "--dir", str(folder), *args]
    env = {**environment(REPO), "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def proc_stat(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: [0] state, [1] parent, [2] process group."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def all_pids() -> list[int]:
    return [int(proc.name) for proc in Path("/proc").iterdir() if proc.name.isdigit()]


def server_pids(folder: Path) -> list[int]:
    """Every live process of this server: the MLflow server's process group, the postmaster and its children."""
    groups = []
    if (folder / "mlflow.pid").exists():
        groups.append(json.loads((folder / "mlflow.pid").read_text())["pid"])
    postmaster = folder / "postgres/data/postmaster.pid"
    parents = [int(postmaster.read_text().split()[0])] if postmaster.exists() else []
    found = []
    for pid in all_pids():
        fields = proc_stat(pid)
        if fields and fields[0] != "Z" and (int(fields[2]) in groups or pid in parents or int(fields[1]) in parents):
            found.append(pid)
    return found


@contextmanager
def server_folder():
    """A folder for a server, with every process of the server in it stopped and the folder removed at the end."""
    # Not under pytest's folder: as root the cluster runs as `postgres`, which must traverse every parent, and
    # each pytest session (another one may run beside this) makes /tmp/pytest-of-<user> 0700 again.
    parent = Path(tempfile.mkdtemp(prefix="invaders-server-"))
    parent.chmod(0o711)
    folders = []  # a test may restore into a second folder beside the first

    def new_folder() -> Path:
        folders.append(parent / f"server-{len(folders)}")
        return folders[-1]

    try:
        yield new_folder
    finally:
        for folder in folders:
            if folder.exists():
                server_cli(folder, "stop", check=False)
                for pid in server_pids(folder):  # never leave a process behind, even if stop failed
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        shutil.rmtree(parent, ignore_errors=True)


def started_server(folder: Path, app: str = "invaders-auth") -> dict:
    """Start a server in ``folder`` with an EDIT user alice and a READ user bob."""
    folder.mkdir(mode=0o711)
    port = free_port()
    began = time.monotonic()
    started = server_cli(folder, "start", "--port", str(port), "--app", app)
    cold = time.monotonic() - began
    users = {}
    for name, access in (("alice", "EDIT"), ("bob", "READ")):
        server_cli(folder, "add-user", name, access)
        users[name] = login(folder / "users" / f"{name}.env")
    return {"folder": folder, "url": f"http://127.0.0.1:{port}", "users": users, "start": started, "cold": cold}


@pytest.fixture(scope="module")
def server():
    """A started server (invaders-auth) with an EDIT user and a READ user; stopped (PostgreSQL included) at the end."""
    with server_folder() as new_folder:
        yield started_server(new_folder())


@pytest.fixture(scope="module")
def folders():
    """New folders for servers of a test (restore, upgrade, supervision), all stopped and removed at the end."""
    with server_folder() as new_folder:
        yield new_folder


def login(path: Path) -> dict[str, str]:
    """The MLFLOW_TRACKING_* variables of a user's env file."""
    return dict(line.removeprefix("export ").split("=", 1) for line in path.read_text().splitlines() if line)


def status(url: str, path: str, user: str | None = None, password: str | None = None) -> int:
    import base64

    request = urllib.request.Request(f"{url}{path}")
    if user:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def client_as(env: dict[str, str]):
    """An MlflowClient logged in with ``env``'s variables (set in this process for the call's duration)."""
    from mlflow.tracking import MlflowClient

    os.environ.update(env)
    return MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])


@pytest.fixture
def logged_out():
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    saved = {key: os.environ.get(key) for key in keys}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_secrets_stay_in_one_private_file(server):
    folder = server["folder"]
    secrets = json.loads((folder / "secrets.json").read_text())
    assert sorted(secrets) == ["admin_password", "database_password", "flask_secret_key"]
    for private in ("secrets.json", "pgpass", "users/alice.env", "users/bob.env"):
        assert (folder / private).stat().st_mode & 0o777 == 0o600, private
    assert str(folder / "secrets.json") in server["start"].stderr, "the first start says where the secrets are"
    pids = server_pids(folder)
    assert len(pids) >= 4, "MLflow server, gunicorn and its workers, PostgreSQL and its workers"
    readable = [
        *(command_line(pid) for pid in all_pids()),
        server["start"].stdout + server["start"].stderr,
        (folder / "mlflow.log").read_text(),
        (folder / "auth.ini").read_text(),
        (folder / "server.json").read_text(),
        *(path.read_text(errors="replace") for path in (folder / "postgres").glob("*.log")),
    ]
    for name, secret in secrets.items():
        assert not any(secret in text for text in readable), f"{name} is visible in argv, a log or a config file"
    assert (folder / "postgres/data").stat().st_uid != 0 or os.geteuid() != 0, "PostgreSQL never runs as root"
    ignored = subprocess.run(["git", "check-ignore", ".server/secrets.json", ".server/users/a.env"], cwd=REPO)
    assert ignored.returncode == 0, "the default server folder is git-ignored"


def test_no_login_or_a_wrong_password_gets_401(server):
    url, alice = server["url"], server["users"]["alice"]
    path = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + EXPERIMENT
    assert status(url, "/health") == 200
    assert status(url, path) == 401
    assert status(url, path, "alice", "not-her-password") == 401
    assert status(url, path, "alice", alice["MLFLOW_TRACKING_PASSWORD"]) == 200


def test_a_read_user_reads_but_cannot_log(server, logged_out):
    from mlflow.exceptions import MlflowException

    alice = client_as(server["users"]["alice"])
    experiment = alice.get_experiment_by_name(EXPERIMENT)
    run_id = alice.create_run(experiment.experiment_id).info.run_id
    alice.log_metric(run_id, "x", 1.0, step=3)
    bob = client_as(server["users"]["bob"])
    assert [m.step for m in bob.get_metric_history(run_id, "x")] == [3]
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
        bob.log_metric(run_id, "x", 2.0, step=4)
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
        bob.create_run(experiment.experiment_id)


def test_a_run_is_judged_by_its_own_experiment(server, logged_out):
    """The server runs invaders-auth (auth_app.py), which keeps each run's experiment instead of loading the run
    on every request: an EDIT user of one experiment still cannot log to a run of another one, nor to a run that
    does not exist, the first time or from what the server kept; she reads the other run; the admin logs to it."""
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    mlflow_pid = json.loads((server["folder"] / "mlflow.pid").read_text())["pid"]
    assert "--app-name\0invaders-auth\0" in command_line(mlflow_pid)
    secrets = json.loads((server["folder"] / "secrets.json").read_text())
    admin_env = {"MLFLOW_TRACKING_URI": server["url"], "MLFLOW_TRACKING_USERNAME": "admin"}
    admin = client_as({**admin_env, "MLFLOW_TRACKING_PASSWORD": secrets["admin_password"]})
    foreign = admin.create_run(admin.create_experiment(f"other-{time.time_ns()}")).info.run_id
    alice = client_as(server["users"]["alice"])
    own = alice.create_run(alice.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
    for step in range(2):  # the second time, the server knows both runs' experiments
        alice.log_metric(own, "x", 1.0, step=step)
        alice.log_batch(own, metrics=[Metric("y", 1.0, 0, step)])
        assert alice.get_run(foreign).info.run_id == foreign
        for log in (
            lambda step=step: alice.log_metric(foreign, "x", 1.0, step=step),
            lambda step=step: alice.log_batch(foreign, metrics=[Metric("y", 1.0, 0, step)]),
            lambda: alice.set_tag(foreign, "t", "v"),
            lambda step=step: alice.log_metric("0" * 32, "x", 1.0, step=step),
        ):
            with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
                log()
    assert [m.step for m in alice.get_metric_history(own, "x")] == [0, 1]
    admin = client_as({**admin_env, "MLFLOW_TRACKING_PASSWORD": secrets["admin_password"]})
    admin.log_metric(foreign, "x", 2.0, step=5)
    assert [m.step for m in admin.get_metric_history(foreign, "x")] == [5]


def test_a_new_right_counts_at_once_a_revoked_one_within_seconds(server, logged_out):
    """invaders-auth keeps a user's grants a few seconds (auth_app.GRANTS_SECONDS) but decides a refusal again
    from the database: a grant just given works on the next request; one taken back stops within seconds."""
    from mlflow.exceptions import MlflowException

    from invaders.tracking.auth_app import GRANTS_SECONDS

    alice = client_as(server["users"]["alice"])
    run_id = alice.create_run(alice.get_experiment_by_name(EXPERIMENT).experiment_id).info.run_id
    server_cli(server["folder"], "add-user", "erin", "READ")
    erin_env = login(server["folder"] / "users" / "erin.env")
    erin = client_as(erin_env)
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
        erin.log_metric(run_id, "x", 1.0, step=0)  # the server now keeps her READ grant
    server_cli(server["folder"], "add-user", "erin", "EDIT")
    erin = client_as(erin_env)
    for step in range(4):  # both workers
        erin.log_metric(run_id, "x", 1.0, step=step)
    server_cli(server["folder"], "add-user", "erin", "READ")
    erin = client_as(erin_env)
    deadline = time.monotonic() + GRANTS_SECONDS + 5
    refused = 0
    while refused < 4:  # both workers refuse
        assert time.monotonic() < deadline, f"a revoked grant still works after {GRANTS_SECONDS + 5} s"
        try:
            erin.log_metric(run_id, "x", 1.0, step=10)
        except MlflowException as error:
            assert "PERMISSION_DENIED" in str(error) or "403" in str(error)
            refused += 1
        time.sleep(0.2)


def test_two_edit_users_both_register_agents_and_move_the_champion(server, logged_out):
    """Rights on the experiment come with rights on its registered model (the agents)."""
    server_cli(server["folder"], "add-user", "dave", "EDIT")
    dave_env = login(server["folder"] / "users" / "dave.env")
    for user in (server["users"]["alice"], dave_env):
        client = client_as(user)
        experiment = client.get_experiment_by_name(EXPERIMENT)
        run_id = client.create_run(experiment.experiment_id).info.run_id
        if not client.search_registered_models(f"name = '{EXPERIMENT}'"):
            client.create_registered_model(EXPERIMENT)
        version = client.create_model_version(EXPERIMENT, f"runs:/{run_id}/agent", run_id=run_id)
        client.set_registered_model_alias(EXPERIMENT, "champion", version.version)
    assert client.get_model_version_by_alias(EXPERIMENT, "champion").version == version.version


def test_bad_user_requests_are_one_line(server):
    wrong = server_cli(server["folder"], "add-user", "carol", "WRITE", check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines() == ["server: error: ACCESS='WRITE': one of READ, EDIT, MANAGE"]
    wrong = server_cli(server["folder"], "add-user", "no spaces", "READ", check=False)
    assert wrong.returncode == 2 and "NAME='no spaces'" in wrong.stderr


def stage_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip() and not TF_NOISE.match(line)]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_repo(tmp_path_factory.mktemp("team-repo"))


def run_stage(repo: Path, script: str, **env: str) -> subprocess.CompletedProcess:
    full = {**environment(repo), "PYTHONPATH": str(repo / "src"), **env}
    return subprocess.run([PYTHON, script], cwd=repo, env=full, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "who, expected",
    [
        ("nobody", "the server needs a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (HTTP 401)"),
        ("wrong-password", "login refused for user 'alice': check MLFLOW_TRACKING_USERNAME and"),
        ("read-only", "user 'bob' may read but not write here (HTTP 403)"),
        ("no-server", "no MLflow server answers ([Errno 111] Connection refused)"),
    ],
)
def test_a_stage_refused_by_the_server_says_so_in_one_line_before_any_work(server, repo, who, expected):
    url = server["url"]
    env = {
        "nobody": {"MLFLOW_TRACKING_URI": url},
        "wrong-password": {**server["users"]["alice"], "MLFLOW_TRACKING_PASSWORD": "wrong"},
        "read-only": server["users"]["bob"],
        "no-server": {**server["users"]["alice"], "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}"},
    }[who]
    began = time.monotonic()
    done = run_stage(repo, "stages/build_model.py", **env)
    lines = stage_lines(done)
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("build-model: error: MLFLOW_TRACKING_URI = "), done.stderr[-3000:]
    assert expected in lines[0]
    assert time.monotonic() - began < 60
    assert not (repo / "models/initial").exists(), "the stage stopped before its work"


@pytest.mark.e2e
def test_dvc_repro_logs_through_the_server_and_survives_a_restart(server, repo, tmp_path, logged_out):
    folder, alice = server["folder"], server["users"]["alice"]
    env = {**environment(repo), **alice}
    run(["dvc", "repro", "baseline", "build-model"], repo, env)
    assert not (repo / "mlflow.db").exists(), "logged to the local store instead of the server"
    client = client_as(alice)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = {run.data.tags.get("invaders.stage"): run for run in client.search_runs([experiment.experiment_id])}
    assert {"baseline", "build-model"} <= set(runs)
    build = runs["build-model"]
    assert build.info.status == "FINISHED" and build.info.artifact_uri.startswith("mlflow-artifacts:")
    downloaded = Path(client.download_artifacts(build.info.run_id, "model/weights.npz", str(tmp_path)))
    assert downloaded.read_bytes() == (repo / "models/initial/weights.npz").read_bytes()
    assert list((folder / "artifacts").rglob("weights.npz")), "artifacts live in the server's folder"

    pids = server_pids(folder)
    stopped = server_cli(folder, "stop")
    assert "MLflow server, PostgreSQL" in stopped.stderr
    assert not [pid for pid in pids if proc_stat(pid)[:1] not in ([], ["Z"])], "a process of the server outlived stop"
    began = time.monotonic()
    server_cli(folder, "start", "--port", server["url"].rsplit(":", 1)[1])
    warm = time.monotonic() - began
    print(f"server start: cold {server['cold']:.1f} s, warm {warm:.1f} s")
    again = client_as(alice).get_run(build.info.run_id)
    assert again.data.metrics == build.data.metrics and again.info.status == "FINISHED"
    assert status(server["url"], "/api/2.0/mlflow/experiments/search?max_results=1", "alice", "x") == 401


@pytest.mark.e2e
def test_a_server_killed_mid_training_fails_in_one_line_and_the_run_resumes(server, tmp_path, logged_out):
    folder, alice = server["folder"], server["users"]["alice"]
    overrides = {"train": {"steps": 2_000, "checkpoint_interval": 400, "log_interval": 100, "replay_capacity": 60_000}}
    root = make_repo(tmp_path / "repo", overrides)
    env = {**environment(root), **alice}
    run(["dvc", "repro", "build-model"], root, env)
    env["PYTHONPATH"] = str(root / "src")
    checkpoints = root / "checkpoints" / "workspace" / "train"
    process = subprocess.Popen(
        [PYTHON, "stages/train.py"], cwd=root, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while not (checkpoints.is_dir() and any(checkpoints.glob("step-*"))):
            assert process.poll() is None and time.monotonic() < deadline, "no checkpoint"
            time.sleep(0.01)
        mlflow_pid = json.loads((folder / "mlflow.pid").read_text())["pid"]
        os.killpg(mlflow_pid, signal.SIGKILL)  # the server dies; PostgreSQL stays
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 2, stderr[-3000:]
    errors = [line.split("\r")[-1] for line in stderr.splitlines() if " error: " in line]
    assert len(errors) == 1, stderr[-3000:]  # the progress bar may share its line: "train:  14%|...train: error: ..."
    assert f"train: error: MLFLOW_TRACKING_URI = {server['url']}: the MLflow server stopped answering" in errors[0]
    assert "Traceback" not in stderr, stderr[-3000:]

    server_cli(folder, "start", "--port", server["url"].rsplit(":", 1)[1])
    done = subprocess.run([PYTHON, "stages/train.py"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from the checkpoint" in done.stderr
    client = client_as(alice)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`invaders.stage` = 'train'")
    assert len(runs) == 1, "one MLflow run across both attempts"
    assert runs[0].info.status == "FINISHED"
    steps = [metric.step for metric in client.get_metric_history(runs[0].info.run_id, "train/episodes")]
    assert len(steps) == len(set(steps)) == 20, f"one row per 100 steps, none twice, none lost: {sorted(steps)}"


def local_store(folder: Path) -> tuple[str, str]:
    """A sqlite store with a finished run (params, two metric histories, tags, artifacts) registered as a model
    version with an alias; returns (uri, run id)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment(EXPERIMENT, artifact_location=(folder / "mlruns").as_uri())
    run = client.create_run(experiment, tags={"invaders.stage": "train"}, run_name="train 10k")
    run_id = run.info.run_id
    client.log_batch(run_id, params=[], metrics=[Metric("train/loss", 1.0 / s, 1_000 + s, s) for s in range(1, 1_500)])
    client.log_batch(run_id, metrics=[Metric("game_score", float(s), 5, 0) for s in (110, 120)])
    client.log_param(run_id, "train.steps", "10000")
    (folder / "agent").mkdir()
    (folder / "agent/weights.npz").write_bytes(b"\x00weights" * 1000)
    (folder / "agent/agent.json").write_text("{}")
    client.log_artifacts(run_id, str(folder / "agent"), "agent")
    client.set_terminated(run_id, "FINISHED", end_time=run.info.start_time + 5_000)
    client.create_registered_model("invaders-agent", description="agents")
    version = client.create_model_version(
        "invaders-agent", f"{run.info.artifact_uri}/agent", run_id=run_id, tags={"weights": "abc"}
    )
    client.set_registered_model_alias("invaders-agent", "champion", version.version)
    return uri, run_id


def import_store(server, database: Path) -> subprocess.CompletedProcess:
    env = {**environment(REPO), "PYTHONPATH": str(REPO / "src"), **server["users"]["alice"]}
    command = [PYTHON, "-m", "invaders.tracking.store_copy", str(database)]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_a_local_store_is_copied_into_the_server_once(server, tmp_path, logged_out):
    from mlflow.tracking import MlflowClient

    uri, run_id = local_store(tmp_path)
    done = import_store(server, tmp_path / "mlflow.db")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 runs" in done.stderr and "1 versions" in done.stderr
    again = import_store(server, tmp_path / "mlflow.db")
    assert again.returncode == 0 and "0 runs, 1 skipped" in again.stderr, again.stderr[-3000:]

    source = MlflowClient(tracking_uri=uri).get_run(run_id)
    target = client_as(server["users"]["alice"])
    copies = target.search_runs(
        [target.get_experiment_by_name(EXPERIMENT).experiment_id],
        filter_string=f"tags.`invaders.copied_from` = '{run_id}'",
    )
    assert len(copies) == 1
    copy = copies[0]
    assert copy.info.run_name == "train 10k" and copy.info.status == "FINISHED"
    assert (copy.info.start_time, copy.info.end_time) == (source.info.start_time, source.info.end_time)
    assert copy.data.params == source.data.params
    assert {k: v for k, v in copy.data.tags.items() if k != "invaders.copied_from"} == source.data.tags
    for key in ("train/loss", "game_score"):
        history = [(m.step, m.timestamp, m.value) for m in target.get_metric_history(copy.info.run_id, key)]
        expected = [
            (m.step, m.timestamp, m.value) for m in MlflowClient(tracking_uri=uri).get_metric_history(run_id, key)
        ]
        assert sorted(history) == sorted(expected), key
    weights = target.download_artifacts(copy.info.run_id, "agent/weights.npz", str(tmp_path / "down"))
    assert Path(weights).read_bytes() == (tmp_path / "agent/weights.npz").read_bytes()
    champion = target.get_model_version_by_alias("invaders-agent", "champion")
    assert champion.run_id == copy.info.run_id and champion.tags["weights"] == "abc"
    assert champion.source == f"{copy.info.artifact_uri}/agent"


AGENT = REPO / "shipped" / "dqn-100k"


def logged_model_store(folder: Path) -> tuple[str, str]:
    """A sqlite store holding the shipped 100k agent the MLflow 3 way: a logged model (``models:/m-...``, its
    artifacts under the experiment, not the run) with a metric, registered as a version of ``EXPERIMENT`` that
    is the champion; returns (uri, logged model id)."""
    import mlflow
    import mlflow.pyfunc

    from invaders.models.networks import load_spec
    from invaders.tracking import registry

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment(EXPERIMENT, artifact_location=(folder / "mlruns").as_uri())
        spec = load_spec(AGENT)
        with mlflow.start_run(experiment_id=experiment, run_name="evaluate dqn-100k"), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*(type hints|input example).*")  # the signature is given
            logged = mlflow.pyfunc.log_model(
                name="agent",
                python_model=str(registry.AGENT_MODEL),
                artifacts={name.split(".")[0]: str(AGENT / name) for name in registry.AGENT_FILES},
                code_paths=[str(registry.PACKAGE)],
                signature=registry.signature(tuple(spec.input_shape), spec.num_actions),
                pip_requirements=registry.pip_requirements(),
                registered_model_name=EXPERIMENT,
                model_type="agent",
            )
            mlflow.log_metric("score_mean", 601.2, model_id=logged.model_id)
    finally:
        mlflow.set_tracking_uri(None)
    mlflow.MlflowClient(uri).set_registered_model_alias(EXPERIMENT, "champion", "1")
    return uri, logged.model_id


PREDICT = """
import sys, numpy as np, mlflow.pyfunc
from invaders.models.networks import load_model
observations = np.load(sys.argv[1])
for uri in sys.argv[2:]:
    print(' '.join(map(str, mlflow.pyfunc.load_model(uri).predict(observations)['action'].tolist())))
network, _ = load_model({agent!r})
print(' '.join(map(str, np.asarray(network(observations)).argmax(axis=1).tolist())))
"""


def test_an_mlflow3_logged_model_is_copied_and_its_versions_load_and_play_on_the_server(server, tmp_path, logged_out):
    from mlflow.tracking import MlflowClient

    from invaders.models.networks import load_spec

    uri, model_id = logged_model_store(tmp_path)
    done = import_store(server, tmp_path / "mlflow.db")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 logged models" in done.stderr and "1 versions" in done.stderr, done.stderr[-3000:]
    again = import_store(server, tmp_path / "mlflow.db")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "0 runs, 1 skipped" in again.stderr and "0 logged models" in again.stderr and "0 versions" in again.stderr

    target = client_as(server["users"]["alice"])
    experiment = target.get_experiment_by_name(EXPERIMENT).experiment_id
    copies = [m for m in target.search_logged_models([experiment]) if m.tags.get("invaders.copied_from") == model_id]
    assert len(copies) == 1, "copied once"
    copy, source = copies[0], MlflowClient(uri).get_logged_model(model_id)
    assert (copy.name, copy.model_type, str(copy.status), copy.params) == (
        source.name, source.model_type, "READY", source.params,
    )  # fmt: skip
    assert [(m.key, m.value) for m in copy.metrics] == [("score_mean", 601.2)]
    assert target.get_run(copy.source_run_id).data.tags["invaders.copied_from"] == source.source_run_id
    champion = target.get_model_version_by_alias(EXPERIMENT, "champion")
    assert champion.source == f"models:/{copy.model_id}"

    observations = np.random.default_rng(0).integers(0, 256, (16, *load_spec(AGENT).input_shape), dtype=np.uint8)
    np.save(tmp_path / "obs.npy", observations)
    uris = [f"models:/{EXPERIMENT}/{champion.version}", f"models:/{EXPERIMENT}@champion"]
    env = {**environment(REPO), "PYTHONPATH": str(REPO / "src"), **server["users"]["alice"]}
    script = PREDICT.format(agent=str(AGENT))
    played = subprocess.run(
        [PYTHON, "-c", script, str(tmp_path / "obs.npy"), *uris],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert played.returncode == 0, played.stderr[-3000:]
    by_version, by_alias, by_weights = played.stdout.strip().splitlines()[-3:]
    assert by_version == by_alias == by_weights, "the server's versions play as the agent's weights"


def test_importing_something_that_is_no_store_is_one_line(server, tmp_path):
    (tmp_path / "notes.db").write_text("not a database")
    done = import_store(server, tmp_path / "notes.db")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"server-import: error: DB={tmp_path / 'notes.db'}: not a sqlite database (file is not a database)"
    ]


def test_listening_beyond_loopback_is_an_explicit_choice_with_a_warning():
    from invaders.tracking.server import bind_warning

    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        assert bind_warning(host, 5050) is None, host
    for host in ("0.0.0.0", "::", "192.168.1.20", "tracking.example.org"):
        assert bind_warning(host, 5050).startswith(f"warning: listening on {host}: anyone who reaches port 5050")


# --- Running the server for months: users, backups, upgrades, supervision, the auth app's rights ---------------


def admin_of(server) -> dict[str, str]:
    secrets = json.loads((server["folder"] / "secrets.json").read_text())
    return {"MLFLOW_TRACKING_URI": server["url"], "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": secrets["admin_password"]}  # fmt: skip


def one_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("server: error: "), done.stderr[-3000:]
    return lines[0].removeprefix("server: error: ")


def refused_within_seconds(url: str, path: str, user: str, password: str) -> bool:
    """Whether both workers refuse the login within the time a worker keeps a login it checked."""
    from invaders.tracking.server import AUTH_CACHE_SECONDS

    deadline, refused = time.monotonic() + AUTH_CACHE_SECONDS + 5, 0
    while refused < 4 and time.monotonic() < deadline:  # 4 in a row: both workers
        refused = refused + 1 if status(url, path, user, password) == 401 else 0
        time.sleep(0.1)
    return refused == 4


def test_users_are_listed_reset_removed_and_change_their_own_password(server):
    folder, url = server["folder"], server["url"]
    path = "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" + EXPERIMENT
    server_cli(folder, "add-user", "frank", "MANAGE")
    listed = server_cli(folder, "users").stdout.splitlines()
    rows = dict(line.split("\t") for line in listed)
    assert rows["admin"] == "admin: every right"
    assert rows["frank"].startswith("MANAGE on experiment space-invaders-dqn (")
    assert rows["frank"].endswith("; MANAGE on registered model space-invaders-dqn")
    assert rows["bob"].startswith("READ on experiment space-invaders-dqn (")

    frank_file = folder / "users/frank.env"
    first = login(frank_file)["MLFLOW_TRACKING_PASSWORD"]
    server_cli(folder, "reset-password", "frank")
    second = login(frank_file)["MLFLOW_TRACKING_PASSWORD"]
    assert frank_file.stat().st_mode & 0o777 == 0o600 and second != first
    assert status(url, path, "frank", second) == 200 and refused_within_seconds(url, path, "frank", first)

    server_cli(folder, "--login", str(frank_file), "passwd")  # with his current login, by himself
    third = login(frank_file)["MLFLOW_TRACKING_PASSWORD"]
    assert third != second and frank_file.stat().st_mode & 0o777 == 0o600
    assert status(url, path, "frank", third) == 200 and refused_within_seconds(url, path, "frank", second)

    for args, expected in (
        (("reset-password", "zoe"), "NAME='zoe': no such user (known: "),
        (("remove-user", "zoe"), "NAME='zoe': no such user (known: "),
        (("remove-user", "admin"), "NAME='admin': the admin account cannot be removed"),
        (("--login", str(frank_file), "remove-user", "bob"),
         "removing 'bob': user 'frank' may not do that (HTTP 403): only the admin manages users"),
        (("--login", str(frank_file), "reset-password", "bob"),
         "resetting 'bob''s password: user 'frank' may not do that (HTTP 403): only the admin manages users"),
        (("passwd",), "passwd needs --login FILE: your login file, where the new password goes"),
    ):  # fmt: skip
        assert one_error(server_cli(folder, *args, check=False)).startswith(expected), args

    server_cli(folder, "remove-user", "frank")
    assert not frank_file.exists() and refused_within_seconds(url, path, "frank", third)
    assert "frank" not in server_cli(folder, "users").stdout


LOGGER = """
import os, sys, time
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
run_id = sys.argv[1]
for batch in range(10_000):
    client.log_batch(run_id, metrics=[Metric("loss", float(step), 0, step) for step in range(batch * 100, batch * 100 + 100)])
    print(batch, flush=True)
"""


def test_a_backup_taken_while_a_stage_logs_restores_everything_into_a_new_folder(server, folders, tmp_path, logged_out):
    from mlflow.exceptions import MlflowException

    folder = server["folder"]
    alice = client_as(server["users"]["alice"])
    experiment = alice.get_experiment_by_name(EXPERIMENT).experiment_id
    finished = alice.create_run(experiment, run_name="finished")
    alice.log_param(finished.info.run_id, "train.steps", "10000")
    alice.log_metric(finished.info.run_id, "game_score", 123.0, step=4)
    (tmp_path / "agent.json").write_text('{"agent": 1}')
    alice.log_artifact(finished.info.run_id, str(tmp_path / "agent.json"), "agent")
    alice.set_terminated(finished.info.run_id)
    model = f"{EXPERIMENT}-backup"
    alice.create_registered_model(model)
    version = alice.create_model_version(model, f"{finished.info.artifact_uri}/agent", run_id=finished.info.run_id)
    alice.set_registered_model_alias(model, "champion", version.version)

    logging = alice.create_run(experiment, run_name="logging").info.run_id
    env = {**environment(REPO), "PYTHONPATH": str(REPO / "src"), **server["users"]["alice"]}
    stage = subprocess.Popen([PYTHON, "-c", LOGGER, logging], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert stage.stdout.readline().strip() == "0", "the stage logs"
        began = time.monotonic()
        made = server_cli(folder, "backup")
        backup_seconds = time.monotonic() - began
        assert stage.poll() is None, "the stage still logged after the backup"
    finally:
        stage.kill()
        stage.wait()
    archive = Path(re.search(r"backup (\S+\.tar) ", made.stderr).group(1))
    assert archive.parent == folder / "backups" and archive.stat().st_mode & 0o777 == 0o600

    target = folders()
    began = time.monotonic()
    server_cli(target, "restore", str(archive))
    restore_seconds = time.monotonic() - began
    assert one_error(server_cli(target, "restore", str(archive), check=False)).startswith(f"--dir {target}: not empty")
    port = free_port()
    server_cli(target, "start", "--port", str(port))
    print(f"backup {backup_seconds:.1f} s, {archive.stat().st_size / 2**20:.2f} MiB; restore {restore_seconds:.1f} s")

    for private in ("secrets.json", "users/alice.env", "users/bob.env"):
        assert (target / private).stat().st_mode & 0o777 == 0o600, private
    assert (target / "users").stat().st_mode & 0o777 == 0o700
    restored = {name: login(target / "users" / f"{name}.env") for name in ("alice", "bob")}
    for env in restored.values():
        env["MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{port}"
    copy = client_as(restored["alice"])
    run = copy.get_run(finished.info.run_id)
    assert run.data.params == {"train.steps": "10000"} and run.data.metrics == {"game_score": 123.0}
    downloaded = copy.download_artifacts(run.info.run_id, "agent/agent.json", str(tmp_path / "down"))
    assert Path(downloaded).read_text() == '{"agent": 1}'
    champion = copy.get_model_version_by_alias(model, "champion")
    assert (champion.version, champion.run_id) == (version.version, finished.info.run_id)
    # consistent: whole batches only, and the latest value is the last row's
    steps = sorted(m.step for m in copy.get_metric_history(logging, "loss"))
    assert steps and steps == list(range(len(steps))) and len(steps) % 100 == 0, steps[-3:]
    assert copy.get_run(logging).data.metrics["loss"] == float(steps[-1])
    bob = client_as(restored["bob"])
    assert bob.get_run(logging).info.run_id == logging
    with pytest.raises(MlflowException, match="403|PERMISSION_DENIED"):
        bob.log_metric(logging, "loss", 1.0, step=10**6)
    admin = client_as(admin_of({"folder": target, "url": f"http://127.0.0.1:{port}"}))
    assert admin.get_experiment_by_name(EXPERIMENT).experiment_id == experiment

    keep = tmp_path / "kept"
    for _ in range(3):
        server_cli(folder, "backup", "--to", str(keep), "--keep", "2")
    assert len(list(keep.glob("invaders-server-*.tar"))) == 2 and not list(keep.glob(".*"))
    assert one_error(server_cli(folder, "backup", "--keep", "0", check=False)) == (
        "KEEP=0: the number of backups to keep, 1 or more"
    )
    (tmp_path / "x.tar").write_bytes(b"not a tar")
    assert one_error(server_cli(folders(), "restore", str(tmp_path / "x.tar"), check=False)).startswith(
        f"FILE={tmp_path / 'x.tar'}: not a server backup"
    )


OLD_MLFLOW_REVISION = "0584bdc529eb"  # MLflow 2.x: before logged models, v3 traces and workspaces
OLD_AUTH_REVISION = "8606fa83a998"  # basic-auth's first schema: per-resource permission tables, no roles
OLD_RUN = "a" + "0" * 31


def older_database(folder: Path) -> None:
    """A stopped server whose database has MLflow's and basic-auth's schemas of an older MLflow (alembic stopped
    at their old revisions), holding an experiment, a run with a metric and a user with a grant as it wrote them."""
    import sqlalchemy
    from alembic import command
    from mlflow.server.auth.db.utils import migrate
    from mlflow.store.db.utils import _get_alembic_config
    from mlflow.store.tracking.dbmodels.initial_models import Base
    from werkzeug.security import generate_password_hash

    from invaders.tracking.server import Layout, database_uri, start_database, stop

    layout = Layout(folder)
    start_database(layout)
    os.environ["PGPASSFILE"] = str(layout.pgpass)
    engine = sqlalchemy.create_engine(database_uri(layout))
    try:
        Base.metadata.create_all(engine)
        config = _get_alembic_config(database_uri(layout))
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, OLD_MLFLOW_REVISION)
        migrate(engine, OLD_AUTH_REVISION)
        rows = f"""
            INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time,
              last_update_time) VALUES (1, 'old-experiment', 'mlflow-artifacts:/1', 'active', :t, :t);
            INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, user_id, status, start_time,
              end_time, source_version, lifecycle_stage, artifact_uri, experiment_id) VALUES ('{OLD_RUN}', 'old run',
              'LOCAL', '', '', 'carol', 'FINISHED', :t, :t, '', 'active', 'mlflow-artifacts:/1/r/artifacts', 1);
            INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan)
              VALUES ('score', 171.0, :t, '{OLD_RUN}', 7, false);
            INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid)
              VALUES ('score', 171.0, :t, 7, false, '{OLD_RUN}');
            INSERT INTO users (id, username, password_hash, is_admin) VALUES (5, 'carol', :hash, false);
            INSERT INTO experiment_permissions (experiment_id, user_id, permission) VALUES ('1', 5, 'EDIT')"""
        values = {"t": int(time.time() * 1000), "hash": generate_password_hash("carol-password-12")}
        with engine.begin() as connection:
            for sql in rows.split(";"):
                connection.execute(sqlalchemy.text(sql), values)
    finally:
        engine.dispose()
        os.environ.pop("PGPASSFILE")
    stop(layout)


def test_start_names_an_older_schema_and_upgrade_backs_up_migrates_and_starts(folders, logged_out):
    folder = folders()
    folder.mkdir(mode=0o711)
    older_database(folder)
    port = str(free_port())
    refused = one_error(server_cli(folder, "start", "--port", port, check=False))
    assert refused == (
        "the database's schema is older than MLflow 3.17.2's (MLflow schema 0584bdc529eb, expected dc11669786a5; "
        "auth schema 8606fa83a998, expected f1a2b3c4d5e6): run `make server-upgrade` (backs up, migrates, starts)"
    )
    upgraded = server_cli(folder, "upgrade", "--port", port)
    archive = next((folder / "backups").glob("invaders-server-*.tar"))
    assert json.loads(tarfile.open(archive).extractfile("manifest.json").read())["schemas"] == {
        "alembic_version": OLD_MLFLOW_REVISION, "alembic_version_auth": OLD_AUTH_REVISION,
    }  # fmt: skip
    assert "MLflow server on http://127.0.0.1:" in upgraded.stderr
    carol = client_as({"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "MLFLOW_TRACKING_USERNAME": "carol",
                       "MLFLOW_TRACKING_PASSWORD": "carol-password-12"})  # fmt: skip
    run = carol.get_run(OLD_RUN)
    assert (run.info.run_name, run.data.metrics) == ("old run", {"score": 171.0})
    carol.log_metric(OLD_RUN, "score", 180.0, step=8)  # her EDIT grant, migrated into basic-auth's roles
    assert [m.step for m in carol.get_metric_history(OLD_RUN, "score")] == [7, 8]


def test_postgresql_programs_are_the_clusters_version(tmp_path):
    from invaders.tracking.server import PG_LIB, Layout, ServerError, pg_bin

    layout = Layout(tmp_path)
    layout.data.mkdir(parents=True)
    installed = sorted(path.parent.parent.name for path in PG_LIB.glob("*/bin/pg_ctl"))
    (layout.data / "PG_VERSION").write_text(f"{installed[0]}\n")
    assert pg_bin("pg_ctl", layout) == str(PG_LIB / installed[0] / "bin/pg_ctl")
    (layout.data / "PG_VERSION").write_text("9\n")
    with pytest.raises(ServerError) as missing:
        pg_bin("pg_ctl", layout)
    assert str(missing.value) == (
        f"the cluster in {layout.data} is PostgreSQL 9, whose pg_ctl is not installed: apt-get install postgresql-9"
    )


def test_logs_rotate_size_capped(tmp_path):
    from invaders.tracking.server import rotate_log

    log = tmp_path / "mlflow.log"
    for round_ in range(4):
        log.write_text(f"round {round_}\n" + "x" * 100)
        assert rotate_log(log, max_bytes=50, keep=2)
    assert not rotate_log(log, max_bytes=50, keep=2), "an empty log stays"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["mlflow.log", "mlflow.log.1", "mlflow.log.2"]
    assert (tmp_path / "mlflow.log.1").read_text().startswith("round 3")
    assert (tmp_path / "mlflow.log.2").read_text().startswith("round 2")


def test_the_supervisor_restarts_a_killed_mlflow_server_within_seconds(folders):
    from invaders.tracking.server import Layout, healthy
    from invaders.tracking.supervisor import unit

    folder = folders()
    folder.mkdir(mode=0o711)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    service = unit(Layout(folder), "127.0.0.1", port, REPO)
    execute = next(line for line in service.splitlines() if line.startswith("ExecStart="))
    command = execute.removeprefix("ExecStart=").split()  # what systemd runs
    assert command[:3] == [PYTHON, "-m", "invaders.tracking.server"] and "Restart=on-failure" in service
    env = {**environment(REPO), "PYTHONPATH": str(REPO / "src")}
    supervisor = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not healthy(url):
            assert supervisor.poll() is None and time.monotonic() < deadline, "the supervisor did not start it"
            time.sleep(0.2)
        killed = json.loads((folder / "mlflow.pid").read_text())["pid"]
        os.kill(killed, signal.SIGKILL)  # the `mlflow server` process alone: its gunicorn lives on, orphaned
        began = time.monotonic()
        while True:
            recorded = json.loads((folder / "mlflow.pid").read_text())["pid"] if (folder / "mlflow.pid").exists() else 0
            if recorded not in (0, killed) and healthy(url):
                break
            assert time.monotonic() - began < 60, "not restarted within 60 s"
            time.sleep(0.1)
        restarted = time.monotonic() - began
        print(f"restarted {restarted:.1f} s after SIGKILL")
        assert not [pid for pid in all_pids() if proc_stat(pid)[2:3] == [str(killed)] and proc_stat(pid)[0] != "Z"]
        stopped = server_cli(folder, "stop")  # ends the supervisor, which stops both servers
        assert "stopped: supervisor" in stopped.stderr
        _, stderr = supervisor.communicate(timeout=120)
    finally:
        if supervisor.poll() is None:
            os.killpg(supervisor.pid, signal.SIGKILL)
            supervisor.wait()
    assert supervisor.returncode == 0, stderr[-3000:]
    assert "the MLflow server stopped: starting it again" in stderr
    assert "supervisor stopped: MLflow server, PostgreSQL" in stderr
    assert not server_pids(folder)


@pytest.fixture(scope="module")
def stock_server(folders):
    """A server running MLflow's own basic-auth app, to hold invaders-auth's answers against."""
    return started_server(folders(), app="basic-auth")


def http_status(url: str, who: tuple[str, str], method: str, path: str, body: dict | bytes | None = None) -> int:
    import base64

    data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
    call = urllib.request.Request(f"{url}{path}", data=data, method=method)
    call.add_header("Authorization", "Basic " + base64.b64encode(f"{who[0]}:{who[1]}".encode()).decode())
    if data is not None and not isinstance(body, bytes):
        call.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(call, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


API = "/api/2.0/mlflow"
# (resource, action): one request each, on the resources of the asking user's own row (experiment e, run r,
# registered model m, user u made for this user); in this order, deletions last.
ACTIONS = [
    ("experiment", "read", "GET", API + "/experiments/get?experiment_id={e}", None),
    ("experiment", "edit", "POST", API + "/experiments/set-experiment-tag", {"experiment_id": "{e}", "key": "k", "value": "v"}),
    ("experiment", "manage", "POST", "/api/3.0/mlflow/users/permissions/grant",
     {"username": "{u}", "resource_type": "experiment", "resource_id": "{e}", "permission": "READ"}),
    ("run", "read", "GET", API + "/runs/get?run_id={r}", None),
    ("run", "edit", "POST", API + "/runs/log-metric", {"run_id": "{r}", "key": "x", "value": 1.0, "timestamp": 0, "step": 0}),
    ("artifact", "read", "GET", "/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/note.txt", None),
    ("artifact", "edit", "PUT", "/api/2.0/mlflow-artifacts/artifacts/{e}/{r}/artifacts/new.txt", b"new"),
    ("registered model", "read", "GET", API + "/registered-models/get?name={m}", None),
    ("registered model", "edit", "POST", API + "/registered-models/alias", {"name": "{m}", "alias": "champion", "version": "1"}),
    ("registered model", "manage", "POST", "/api/3.0/mlflow/users/permissions/grant",
     {"username": "{u}", "resource_type": "registered_model", "resource_id": "{m}", "permission": "READ"}),
    ("users", "create", "POST", API + "/users/create", {"username": "{u}-new", "password": "a-password-of-16"}),
    ("users", "reset another's password", "PATCH", API + "/users/update-password", {"username": "{u}", "password": "another-password-16"}),
    ("users", "delete another", "DELETE", API + "/users/delete", {"username": "{u}"}),
    ("run", "delete", "POST", API + "/runs/delete", {"run_id": "{r}"}),
    ("registered model", "delete", "DELETE", API + "/registered-models/delete", {"name": "{m}"}),
    ("experiment", "delete", "POST", API + "/experiments/delete", {"experiment_id": "{e}"}),
]  # fmt: skip
# none: no grant (auth.ini's default_permission, READ, applies); DENY: granted on the user's own resources
LEVELS = ("READ", "EDIT", "MANAGE", "admin", "none", "DENY")
Y, N = "yes", "403"
# Who may do an action: its answers at each of LEVELS.
READERS = (Y, Y, Y, Y, Y, N)  # every level but DENY (none reads by the default READ)
EDITORS = (N, Y, Y, Y, N, N)
MANAGERS = (N, N, Y, Y, N, N)
ADMINS = (N, N, N, Y, N, N)
PERMISSIONS = {  # what MLflow 3.17.2's basic-auth answers
    ("experiment", "read"): READERS,
    ("experiment", "edit"): EDITORS,
    ("experiment", "manage"): MANAGERS,
    ("run", "read"): READERS,
    ("run", "edit"): EDITORS,
    ("artifact", "read"): READERS,
    ("artifact", "edit"): EDITORS,
    ("registered model", "read"): READERS,
    ("registered model", "edit"): EDITORS,
    ("registered model", "manage"): MANAGERS,
    ("users", "create"): ADMINS,
    ("users", "reset another's password"): ADMINS,
    ("users", "delete another"): ADMINS,
    ("run", "delete"): MANAGERS,  # EDIT may not delete a run
    ("registered model", "delete"): MANAGERS,
    ("experiment", "delete"): MANAGERS,
}


def permission_table(server) -> dict[tuple[str, str], tuple[str, ...]]:
    """Each level's answer to each action, on a server: 'yes' (2xx) or the HTTP status."""
    from mlflow.server import get_app_client

    admin_env = admin_of(server)
    admin = client_as(admin_env)
    auth = get_app_client("basic-auth", tracking_uri=server["url"])
    answers = {}
    tag = time.time_ns()
    for level in LEVELS:
        name = f"pt-{level.lower()}-{tag}"
        experiment = admin.create_experiment(name)
        run_id = admin.create_run(experiment).info.run_id
        admin.log_text(run_id, "note", "note.txt")
        admin.create_registered_model(name)
        admin.create_model_version(name, f"runs:/{run_id}/agent", run_id=run_id)
        auth.create_user(f"{name}-u", "a-password-of-16")  # the user the actions create grants for and delete
        if level == "admin":
            who = ("admin", admin_env["MLFLOW_TRACKING_PASSWORD"])
        else:
            auth.create_user(name, "a-password-of-16")
            who = (name, "a-password-of-16")
            for resource_type, resource in (("experiment", experiment), ("registered_model", name)):
                if level != "none":
                    auth.grant_user_permission(name, resource_type, resource, level)
        names = {"{e}": experiment, "{r}": run_id, "{m}": name, "{u}": f"{name}-u"}

        def fill(text: str, names: dict[str, str] = names) -> str:
            for placeholder, value in names.items():
                text = text.replace(placeholder, value)
            return text

        for resource, action, method, path, body in ACTIONS:
            if isinstance(body, dict):
                body = json.loads(fill(json.dumps(body)))
            code = http_status(server["url"], who, method, fill(path), body)
            answers.setdefault((resource, action), []).append("yes" if 200 <= code < 300 else str(code))
    return {key: tuple(value) for key, value in answers.items()}


@pytest.mark.parametrize("app", ["basic-auth", "invaders-auth"])
def test_the_permission_table_is_the_same_on_basic_auth_and_invaders_auth(app, request, logged_out):
    server = request.getfixturevalue("stock_server" if app == "basic-auth" else "server")
    table = permission_table(server)
    print(f"\n{app}: " + ", ".join(LEVELS))
    for key, answers in table.items():
        print(f"{key[0]} {key[1]}: {' '.join(answers)}")
    assert table == PERMISSIONS


def test_invaders_auth_refuses_to_load_under_an_unverified_mlflow():
    pretend = (
        "import importlib.metadata as metadata; real = metadata.version; "
        "metadata.version = lambda name: '3.99.0' if name == 'mlflow' else real(name); "
    )
    expected = (
        "invaders-auth was verified on MLflow 3.17.2, not on the installed 3.99.0: install the locked version "
        "(make setup), or start MLflow's own app (--app basic-auth)"
    )
    env = {**environment(REPO), "PYTHONPATH": str(REPO / "src")}
    for code, line in (
        ("import invaders.tracking.auth_app", f"ImportError: {expected}"),
        ("from invaders.tracking.server import main; main(['start'])", f"server: error: {expected}"),
    ):
        done = subprocess.run([PYTHON, "-c", pretend + code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and done.stderr.strip().splitlines()[-1] == line, done.stderr[-2000:]
