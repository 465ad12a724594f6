"""Figures of the team server (README "Team mode"): cold and warm start, per-call latency of logging through it
against a local sqlite store, memory of its processes. Starts its own server in a temporary folder on 127.0.0.1
and stops it at the end. `make server-bench`."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from invaders.tracking.server import Layout, add_user, start, stop


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def server_processes(layout: Layout) -> tuple[list[int], list[int]]:
    """(the MLflow server's process group, PostgreSQL's postmaster and its children)."""
    import json

    group = json.loads(layout.pid.read_text())["pid"]
    postmaster = int((layout.data / "postmaster.pid").read_text().split()[0])
    mlflow, postgres = [], []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(proc.name)
        if int(fields[2]) == group:
            mlflow.append(pid)
        elif pid == postmaster or int(fields[1]) == postmaster:
            postgres.append(pid)
    return mlflow, postgres


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes ``pids`` used so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / os.sysconf("SC_CLK_TCK")


def latency_ms(uri: str, calls: int, pids: list[int] | None = None) -> tuple[list[float], list[float], float, float]:
    """Ms of each log_metric and of each log_batch of 100 metrics, then the server's CPU ms per call of each
    (what a call costs the server whatever else runs on the machine; 0 without ``pids``)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = f"bench-{time.time_ns()}"
    experiment = (
        client.create_experiment(name)
        if uri.startswith("http")
        else client.create_experiment(
            name, artifact_location=(Path(uri.removeprefix("sqlite:///")).parent / "mlruns").as_uri()
        )
    )
    run_id = client.create_run(experiment).info.run_id
    single, batch = [], []
    cpu = cpu_seconds(pids or [])
    for step in range(calls):
        began = time.perf_counter()
        client.log_metric(run_id, "x", float(step), step=step)
        single.append((time.perf_counter() - began) * 1000)
    cpu_single, cpu = cpu_seconds(pids or []) - cpu, cpu_seconds(pids or [])
    for step in range(calls):
        metrics = [Metric(f"m{i}", float(i), 0, step) for i in range(100)]
        began = time.perf_counter()
        client.log_batch(run_id, metrics=metrics)
        batch.append((time.perf_counter() - began) * 1000)
    cpu_batch = cpu_seconds(pids or []) - cpu
    return single, batch, cpu_single / calls * 1000, cpu_batch / calls * 1000


def compare(url: str, sqlite_uri: str, calls: int, rounds: int, pids: list[int]) -> dict[str, float]:
    """Medians of the server's and sqlite's calls, measured in alternating rounds: the load of the machine
    changes by the minute, and both stores see the same."""
    found: dict[str, list[float]] = {
        key: [] for key in ("server_single", "server_batch", "sqlite_single", "sqlite_batch")
    }
    cpu_single = cpu_batch = 0.0
    for _ in range(rounds):
        single, batch, cpu_1, cpu_100 = latency_ms(url, calls // rounds, pids)
        found["server_single"] += single
        found["server_batch"] += batch
        cpu_single, cpu_batch = cpu_single + cpu_1 / rounds, cpu_batch + cpu_100 / rounds
        single, batch, _, _ = latency_ms(sqlite_uri, calls // rounds)
        found["sqlite_single"] += single
        found["sqlite_batch"] += batch
    figures = {key: statistics.median(values) for key, values in found.items()}
    return {**figures, "cpu_single": cpu_single, "cpu_batch": cpu_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4, help="server and sqlite take turns this many times")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as folder:
        os.chmod(folder, 0o711)  # as root, PostgreSQL runs as `postgres` and must reach its folder
        layout = Layout(Path(folder))
        port = 5099
        try:
            began = time.monotonic()
            url = start(layout, port=port)
            cold = time.monotonic() - began
            began = time.monotonic()
            stop(layout)
            stopping = time.monotonic() - began
            began = time.monotonic()
            start(layout, port=port)
            warm = time.monotonic() - began
            login = dict(
                line.removeprefix("export ").split("=", 1)
                for line in add_user(layout, "bench", "EDIT", "bench").read_text().splitlines()
            )
            os.environ.update(login)
            mlflow_pids, postgres_pids = server_processes(layout)
            idle = rss_mb(mlflow_pids), rss_mb(postgres_pids)
            figures = compare(url, f"sqlite:///{folder}/local.db", args.calls, args.rounds, mlflow_pids + postgres_pids)
            mlflow_pids, postgres_pids = server_processes(layout)
            busy = rss_mb(mlflow_pids), rss_mb(postgres_pids)
        finally:
            stop(layout)
        for key in login:
            del os.environ[key]
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| figure | value |\n|---|---|")
    print(f"| cold start (new cluster, database, MLflow tables, server) | {cold:.1f} s |")
    print(f"| warm start (PostgreSQL and MLflow server on existing data) | {warm:.1f} s |")
    print(f"| stop (MLflow server's process group, then PostgreSQL) | {stopping:.1f} s |")
    print(
        f"| `log_metric`, median of {args.calls}: server / sqlite | {figures['server_single']:.1f} ms / {figures['sqlite_single']:.1f} ms |"
    )
    print(
        f"| `log_batch` of 100 metrics: server / sqlite | {figures['server_batch']:.1f} ms / {figures['sqlite_batch']:.1f} ms |"
    )
    print(
        f"| server CPU per call (MLflow + PostgreSQL): `log_metric` / batch of 100 | {figures['cpu_single']:.1f} / {figures['cpu_batch']:.1f} ms |"
    )
    print(
        f"| RSS of the MLflow server's {len(mlflow_pids)} processes, idle / after the calls | {idle[0]:.0f} / {busy[0]:.0f} MB |"
    )
    print(
        f"| RSS of PostgreSQL's {len(postgres_pids)} processes (shared buffers counted in each), idle / after | {idle[1]:.0f} / {busy[1]:.0f} MB |"
    )


if __name__ == "__main__":
    main()
