"""Figures of sweeps on Ray (README "Sweeps and seeds"): prints them, asserts nothing.

    python benchmarks/ray_bench.py --repeats 3

Start-up and shutdown of the local Ray instance as ``invaders-sweep`` starts it (127.0.0.2, token auth);
memory of that instance idle and of a 2-node ``ray start`` cluster on loopback (the e2e test's); the wall
time of one tiny trial through Tune against the same build-model/train/evaluate in a plain process, and
where the difference goes. A temporary MLflow store and Tune storage; every Ray process started here is
stopped by its process group or by ``ray.shutdown`` (never ``ray stop``: it stops anyone's Ray on the host).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from invaders.sweeps import driver  # noqa: E402  (imports no Ray: token auth must be set before)

# tests/repo_copy.py's TINY budgets, one training checkpoint handed to Tune
TRIAL = {
    "env.max_episode_frames": 1500,
    "evaluation.episodes": 2,
    "evaluation.num_envs": 2,
    "evaluation.gif_max_frames": 30,
    "train.steps": 600,
    "train.warmup_fraction": 0.33,
    "train.replay_capacity": 4000,
    "train.log_interval": 200,
    "train.num_envs": 2,
    "train.checkpoint_interval": 300,
    "train.seed": 0,
    "tracking.experiment": "ray-bench",
}
SETTLE = 5.0  # s an idle instance is left before its memory is read: Ray starts idle workers after ready


def processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, name) of every process, from /proc."""
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                name, fields = (proc / "stat").read_text().rsplit(")", 1)
            except OSError:
                continue
            fields = fields.split()
            found[int(proc.name)] = (int(fields[1]), int(fields[2]), name.partition("(")[2])
    return found


def descendants(pid: int) -> list[int]:
    table = processes()
    children: dict[int, list[int]] = {}
    for child, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def in_groups(groups: set[int]) -> list[int]:
    return [pid for pid, (_, group, _) in processes().items() if group in groups]


def memory_mb(pids: list[int]) -> tuple[float, float, str]:
    """Summed RSS and PSS (shared pages split between their users) in MB, and the processes by name."""
    rss = pss = 0
    names = Counter(processes()[pid][2] for pid in pids if pid in processes())
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("Rss", "Pss"):
                    kilobytes = int(value.split()[0])
                    rss, pss = (rss + kilobytes, pss) if key == "Rss" else (rss, pss + kilobytes)
        except OSError:
            pass
    return rss / 1024, pss / 1024, ", ".join(f"{count} {name}" for name, count in names.most_common())


def local_instance() -> dict:
    """Seconds to ready, to a first task's answer (a worker process started) and to shut down; idle memory."""
    import ray

    began = time.perf_counter()
    driver.start_ray(ROOT)
    ready = time.perf_counter() - began
    ray.get(ray.remote(lambda: None).remote())
    first_task = time.perf_counter() - began - ready
    time.sleep(SETTLE)
    rss, pss, names = memory_mb(descendants(os.getpid()))
    began = time.perf_counter()
    ray.shutdown()
    shutdown = time.perf_counter() - began
    return {"ready": ready, "first_task": first_task, "shutdown": shutdown, "rss": rss, "pss": pss, "names": names}


def _ray_start(*args: str, env: dict) -> subprocess.Popen:
    """``ray start --block`` in a process group of its own: the node's processes live as long as it does."""
    command = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--disable-usage-stats", *args]
    return subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def two_node_cluster() -> dict:
    """Seconds until both nodes answer, and the memory of the idle cluster (both process groups)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    address = f"127.0.0.2:{_free_port('127.0.0.2')}"
    node = ["--num-cpus=1", f"--memory={3 * 2**30}", f"--object-store-memory={200 * 2**20}"]
    nodes: list[subprocess.Popen] = []
    began = time.perf_counter()
    try:
        head = ["--head", "--node-ip-address=127.0.0.2", f"--port={address.rpartition(':')[2]}"]
        nodes.append(_ray_start(*head, "--include-dashboard=false", *node, env=env))
        for _ in range(120):  # the worker node joins once the head answers
            status = subprocess.run(["ray", "status", f"--address={address}"], env=env, capture_output=True)
            if status.returncode == 0:
                break
            time.sleep(0.5)
        nodes.append(_ray_start(f"--address={address}", "--node-ip-address=127.0.0.3", *node, env=env))
        for _ in range(240):
            status = subprocess.run(["ray", "status", f"--address={address}"], env=env, capture_output=True, text=True)
            if status.stdout.count(" node_") >= 2:
                break
            time.sleep(0.5)
        up = time.perf_counter() - began
        time.sleep(SETTLE)
        rss, pss, names = memory_mb(in_groups({process.pid for process in nodes}))
    finally:
        for process in reversed(nodes):
            _stop(process)
    return {"up": up, "rss": rss, "pss": pss, "names": names}


def plain_trial(folder: Path) -> dict:
    """build-model, train, evaluate with ``TRIAL`` in a new process, as ``invaders-experiment`` runs them."""
    code = f"""
import json, os, time
began = time.time()
import tensorflow
tensorflow_done = time.time()
from invaders.experiment import train_and_evaluate
from invaders.pipeline import Workspace
from pathlib import Path
imported = time.time()
train_and_evaluate({TRIAL!r}, Workspace(Path({str(folder)!r})), Path({str(ROOT / "params.yaml")!r}))
print(json.dumps({{"began": began, "tensorflow": tensorflow_done - began, "imports": imported - began,
                  "work": time.time() - imported, "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset")}}))
"""
    began = time.time()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], cwd=folder.parent, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the plain trial failed:\n{done.stderr[-3000:]}")
    timings = json.loads(done.stdout.strip().splitlines()[-1])
    wall = time.time() - began
    return {**timings, "wall": wall, "interpreter": wall - timings["imports"] - timings["work"]}


def timed_trial(config: dict, sweep, timings: str) -> None:
    """``run_trial`` on the Ray worker, noting when it began, its imports and the time spent in ``tune.report``."""
    began = time.time()
    import tensorflow  # noqa: F401

    tensorflow_done = time.time()
    from invaders.sweeps import trial

    imported = time.time()
    reports = []
    report = trial._report

    def timed_report(metrics, folder=None):
        start = time.perf_counter()
        report(metrics, folder)
        reports.append(time.perf_counter() - start)

    trial._report = timed_report
    trial.run_trial(config, sweep)
    Path(timings).write_text(
        json.dumps(
            {
                "began": began,
                "tensorflow": tensorflow_done - began,
                "imports": imported - began,
                "work": time.time() - imported - sum(reports),
                "reports": sum(reports),
                "report_count": len(reports),
                "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset"),  # Ray sets it to the trial's CPUs
                "ended": time.time(),
            }
        )
    )


def tune_trial(folder: Path, parent_run_id: str, index: int) -> dict:
    """The same trial through Tune on the running local instance, as the driver submits it."""
    from ray import tune

    from invaders.config import read_params_file
    from invaders.sweeps.trial import SweepContext

    timings = folder / f"trial-{index}.json"
    context = SweepContext("bench", parent_run_id, read_params_file(ROOT / "params.yaml"), ())
    trainable = tune.with_resources(tune.with_parameters(timed_trial, sweep=context, timings=str(timings)), {"cpu": 1})
    tuner = tune.Tuner(
        trainable,
        param_space=TRIAL,
        run_config=tune.RunConfig(
            name=f"bench-{index}",
            storage_path=str(folder / "tune"),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            verbose=0,
        ),
    )
    began = time.time()
    (result,) = tuner.fit()
    wall = time.time() - began
    if result.error:
        raise result.error
    inside = json.loads(timings.read_text())
    return {**inside, "wall": wall, "actor_start": inside["began"] - began, "wrap_up": began + wall - inside["ended"]}


def medians(samples: list[dict]) -> dict:
    """Each figure's median over ``samples``; a setting (a string) as the first sample has it."""
    return {
        key: statistics.median(sample[key] for sample in samples) if isinstance(value, int | float) else value
        for key, value in samples[0].items()
    }


def trial_overhead(folder: Path, repeats: int) -> tuple[dict, dict]:
    """Median figures of the plain process and of Tune, the trials taking turns."""
    from invaders.tracking.sweep_runs import open_sweep_run

    sweep_file = folder / "bench.yaml"
    sweep_file.write_text("name: bench\nsteps: 600\n")
    plain, tuned = [], []
    driver.start_ray(ROOT)
    try:
        parent_run_id = open_sweep_run(TRIAL["tracking.experiment"], "bench", sweep_file, folder, None)
        for index in range(repeats):
            plain.append(plain_trial(folder / f"plain-{index}"))
            tuned.append(tune_trial(folder, parent_run_id, index))
    finally:
        import ray

        ray.shutdown()

    return medians(plain), medians(tuned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement; medians are printed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ray-bench-") as folder:
        folder = Path(folder)
        token = folder / "ray_token"
        token.write_text(os.urandom(32).hex())
        token.chmod(0o600)
        os.environ.update(
            {
                "RAY_AUTH_TOKEN_PATH": str(token),
                "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
                "DVC_ROOT": str(folder),  # MLflow artifacts in the temporary folder, not the repository's mlruns/
                "TF_CPP_MIN_LOG_LEVEL": "2",
            }
        )
        os.environ.pop("RAY_ADDRESS", None)
        driver.use_token_auth(ROOT)
        began = time.perf_counter()
        import ray  # noqa: F401

        import_ray = time.perf_counter() - began
        local = medians([local_instance() for _ in range(args.repeats)])
        cluster = medians([two_node_cluster() for _ in range(args.repeats)])
        plain, tuned = trial_overhead(folder, args.repeats)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; medians of {args.repeats}")
    print("| figure | value |\n|---|---|")
    print(f"| `import ray` | {import_ray:.1f} s |")
    print(f"| local instance (127.0.0.2, token auth): `ray.init` to ready | {local['ready']:.1f} s |")
    print(f"| then a first task's answer (a worker process started) | {local['first_task']:.1f} s |")
    print(f"| `ray.shutdown` | {local['shutdown']:.1f} s |")
    print(f"| idle local instance, RSS / PSS | {local['rss']:.0f} / {local['pss']:.0f} MB ({local['names']}) |")
    print(f"| 2-node `ray start` cluster: both nodes up | {cluster['up']:.1f} s |")
    print(f"| idle 2-node cluster, RSS / PSS | {cluster['rss']:.0f} / {cluster['pss']:.0f} MB ({cluster['names']}) |")
    print(f"| tiny trial ({TRIAL['train.steps']} agent steps, 2 games): plain process | {plain['wall']:.1f} s |")
    other = plain["imports"] - plain["tensorflow"]
    print(
        f"| of which interpreter start and exit / `import tensorflow` / other imports | {plain['interpreter']:.1f} / "
        f"{plain['tensorflow']:.1f} / {other:.1f} s |"
    )
    print(f"| of which build-model, train, evaluate (OMP_NUM_THREADS {plain['omp_threads']}) | {plain['work']:.1f} s |")
    print(f"| the same trial through Tune (`Tuner.fit`) | {tuned['wall']:.1f} s |")
    print(f"| of which fit() to the trial function running (actor start) | {tuned['actor_start']:.1f} s |")
    other = tuned["imports"] - tuned["tensorflow"]
    print(f"| of which `import tensorflow` / other imports | {tuned['tensorflow']:.1f} / {other:.1f} s |")
    print(f"| of which build-model, train, evaluate (OMP_NUM_THREADS {tuned['omp_threads']}) | {tuned['work']:.1f} s |")
    print(
        f"| of which {tuned['report_count']:.0f} `tune.report`s (checkpoints handed over) | {tuned['reports']:.1f} s |"
    )
    print(f"| of which trial end to fit() returning | {tuned['wrap_up']:.1f} s |")
    print(f"| Tune's overhead per trial (Tune - plain) | {tuned['wall'] - plain['wall']:+.1f} s |")


if __name__ == "__main__":
    main()
