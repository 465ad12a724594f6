"""DVC as a team uses it, for real, on one tiny repository: a real OpenSSH server on a loopback address holds
the DVC remote (``make remote-ssh``), a bare git repository stands for the team's git server. One clone runs
the pipeline and an experiment and pushes both; fresh clones see the metrics in git, pull the outputs
byte for byte with nothing to rerun, pull the experiment and apply it, and restore a param set already run
from the run-cache instead of training again."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from repo_copy import REPO, environment, make_repo, run, write_params

pytestmark = pytest.mark.e2e

# Tinier than the e2e defaults: the round trips are about files, not about what they hold.
TINIER = {"env": {"max_episode_frames": 600}, "train": {"steps": 400, "warmup_fraction": 0.25, "log_interval": 100}}
HOST = "127.0.0.23"  # loopback only
EXPERIMENT = "seed1"


def outputs(root: Path) -> list[str]:
    """Every output (``outs``, ``metrics``, ``plots``, cached or not) that ``dvc.lock`` records."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return sorted(out["path"] for stage in lock["stages"].values() for out in stage.get("outs", []))


def files(root: Path) -> dict[str, bytes]:
    """The files of every output of ``root``, by path relative to it."""
    found = {}
    for output in outputs(root):
        path = root / output
        for child in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            found[str(child.relative_to(root))] = child.read_bytes()
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def start_sshd(folder: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    """OpenSSH's server on ``HOST``, key login only (a key pair generated here, mode 0600), sftp for DVC;
    returns it and the settings of ``make remote-ssh``."""
    folder.mkdir(mode=0o700)
    for key in ("host", "client"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", folder / key], check=True)
    (folder / "authorized_keys").write_text((folder / "client.pub").read_text())
    (folder / "authorized_keys").chmod(0o600)
    port = free_port()
    (folder / "sshd_config").write_text(
        f"ListenAddress {HOST}\nPort {port}\nHostKey {folder / 'host'}\nPidFile {folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "UsePAM no\nStrictModes no\nSubsystem sftp internal-sftp\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder, made by the service otherwise
    server = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", folder / "sshd_config"], stderr=open(folder / "sshd.log", "w")
    )
    deadline = time.monotonic() + 10
    while "Server listening" not in (folder / "sshd.log").read_text():
        assert server.poll() is None and time.monotonic() < deadline, (folder / "sshd.log").read_text()
        time.sleep(0.1)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    settings = {"HOST": HOST, "SSH_PORT": str(port), "SSH_USER": user, "SSH_KEY": str(folder / "client")}
    return server, settings


def use_ssh_remote(root: Path, env: dict, settings: dict[str, str], store: Path) -> None:
    """What a colleague runs once per clone: ``make remote-ssh`` (the venv is this test's)."""
    make = ["make", "-o", "setup", "remote-ssh", f"REMOTE_DIR={store}", *(f"{k}={v}" for k, v in settings.items())]
    run(make, root, env)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """The first clone after `dvc repro` and `dvc exp run -n seed1 -S train.seed=1`, both pushed: git to a bare
    repository (main, the experiment, and a branch of it), outputs and run-cache to the SSH remote."""
    tmp = tmp_path_factory.mktemp("team")
    server, settings = start_sshd(tmp / "ssh")
    env = environment(tmp) | {"HOME": str(tmp / "home")}  # known_hosts and ssh config of this test only
    (tmp / "home/.ssh").mkdir(parents=True, mode=0o700)
    host_key = (tmp / "ssh/host.pub").read_text().split()[:2]
    (tmp / "home/.ssh/known_hosts").write_text(f"[{HOST}]:{settings['SSH_PORT']} {' '.join(host_key)}\n")
    try:
        first = make_repo(tmp / "first", TINIER, shipped={"shipped": ["dqn-100k"]})
        # The notebook agent's weights (shipped-weights/, 139 MB, no stage's dep) live in the team's remote,
        # not in git: this clone has none to push.
        run(["git", "rm", "-rq", "shipped-weights"], first, env)
        store = tmp / "dvc-store"
        use_ssh_remote(first, env, settings, store)
        assert (
            "ssh://" in (first / ".dvc/config").read_text() and "keyfile" in (first / ".dvc/config.local").read_text()
        )
        run(["dvc", "repro"], first, env)
        run(["git", "add", "-A"], first, env)
        run(["git", "commit", "-qm", "outputs"], first, env)
        main_files = files(first)
        run(["make", "-o", "setup", "push"], first, env)
        assert any(path.is_file() for path in store.rglob("*")), "the remote holds the outputs"

        origin = tmp / "origin.git"
        run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp, env)
        run(["git", "remote", "add", "origin", str(origin)], first, env)
        run(["git", "push", "-q", "origin", "HEAD:main"], first, env)
        run(["dvc", "exp", "run", "-n", EXPERIMENT, "-S", "train.seed=1"], first, env)
        run(["make", "-o", "setup", "exp-push", f"EXP={EXPERIMENT}"], first, env)
        run(["dvc", "exp", "branch", EXPERIMENT, EXPERIMENT], first, env)
        run(["git", "push", "-q", "origin", EXPERIMENT], first, env)
        yield {
            "tmp": tmp,
            "env": env,
            "origin": origin,
            "settings": settings,
            "store": store,
            "main": main_files,
            "experiment": files(first),
            "first": first,
        }
    finally:
        server.terminate()
        server.wait(timeout=10)


def clone(team, name: str) -> Path:
    """A colleague's fresh clone of the team's git repository, its SSH remote set up."""
    root = team["tmp"] / name
    run(["git", "clone", "-q", str(team["origin"]), str(root)], team["tmp"], team["env"])
    use_ssh_remote(root, team["env"], team["settings"], team["store"])
    return root


def test_a_fresh_clone_lists_mains_metrics_and_diffs_two_commits_without_pulling(team):
    root = team["tmp"] / "metrics"
    run(["git", "clone", "-q", str(team["origin"]), str(root)], team["tmp"], team["env"])
    assert not (root / "models/trained").exists(), "nothing pulled"
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, team["env"]))
    head = next(row for row in shown if row["rev"] != "workspace")
    metrics = head["data"]["metrics"]
    train = metrics["results/train/metrics.json"]["data"]
    assert train["total_steps"] >= 400 and train["precision"] == "float32"
    assert "score_mean" in metrics["results/evaluate/metrics.json"]["data"]
    assert "float32" in run(["dvc", "exp", "show", "--md"], root, team["env"]), "the string metric is shown"
    assert "Everything is up to date" not in run(["dvc", "metrics", "show"], root, team["env"])
    diff = json.loads(run(["dvc", "metrics", "diff", "--json", "HEAD", f"origin/{EXPERIMENT}"], root, team["env"]))
    assert "results/train/metrics.json" in diff, diff


def test_push_pull_over_ssh_leaves_nothing_to_rerun_and_an_experiment_travels_with_its_outputs(team):
    env = team["env"]
    second = clone(team, "second")
    run(["dvc", "pull"], second, env)
    assert files(second) == team["main"], "byte-identical outputs"
    assert "Data and pipelines are up to date" in run(["dvc", "status"], second, env)
    assert run(["dvc", "status", "--cloud"], second, env).strip().endswith("Cache and remote 'team' are in sync.")
    assert "Running stage" not in run(["dvc", "repro"], second, env)
    assert not (second / "mlflow.db").exists(), "nothing ran, so nothing was logged"

    run(["dvc", "exp", "pull", "origin", EXPERIMENT], second, env)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], second, env))
    names = [exp.get("name") for row in shown for exp in row.get("experiments") or []]
    assert EXPERIMENT in names, names
    run(["dvc", "exp", "apply", EXPERIMENT], second, env)
    assert yaml.safe_load((second / "params.yaml").read_text())["train"]["seed"] == 1
    assert files(second) == team["experiment"], "the experiment's outputs came with it"


def test_a_param_set_already_run_is_restored_from_the_run_cache_without_training(team):
    env = team["env"]
    third = clone(team, "third")
    run(["dvc", "pull", "--run-cache"], third, env)  # the runs' records; --pull fetches the outputs they name
    started = time.monotonic()
    restored = run(["dvc", "exp", "run", "--pull", "-S", "train.seed=1"], third, env)
    seconds = time.monotonic() - started
    for stage in ("build-model", "train", "evaluate"):
        assert f"Stage '{stage}' is cached - skipping run" in restored and f"Running stage '{stage}'" not in restored
    experiment = {path: data for path, data in team["experiment"].items() if path.startswith("models/trained")}
    assert {path: data for path, data in files(third).items() if path.startswith("models/trained")} == experiment
    trained = json.loads((third / "results/train/metrics.json").read_text())["wall_time_s"]
    print(f"\nrun-cache: `dvc exp run` restored in {seconds:.1f} s a training of {trained:.1f} s")

    # What does not change the trained weights leaves train up to date: the team server's code, a logging interval.
    with open(third / "src/invaders/tracking/server.py", "a") as server:
        server.write("# edited\n")
    write_params(third, {"train": {"log_interval": 50}})
    status = run(["dvc", "status", "train", "--json"], third, env)
    assert json.loads(status) == {}, status


def test_the_default_remote_is_a_folder_beside_the_clone():
    config = (REPO / ".dvc/config").read_text()
    assert "remote = team" in config and "url = ../../invaders-dvc-remote" in config
    assert Path(REPO / ".dvc" / "../../invaders-dvc-remote").resolve().parent == REPO.parent
