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


def latency_ms(uri: str, calls: int, pids: list[int] | None = None) -> tuple[float, float, float, float]:
    """Median ms of one log_metric and of one log_batch of 100 metrics, then the server's CPU ms per call of
    each (what a call costs the server whatever else runs on the machine; 0 without ``pids``)."""
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
        single.append(time.perf_counter() - began)
    cpu_single, cpu = cpu_seconds(pids or []) - cpu, cpu_seconds(pids or [])
    for step in range(calls):
        metrics = [Metric(f"m{i}", float(i), 0, step) for i in range(100)]
        began = time.perf_counter()
        client.log_batch(run_id, metrics=metrics)
        batch.append(time.perf_counter() - began)
    cpu_batch = cpu_seconds(pids or []) - cpu
    median = statistics.median
    return median(single) * 1000, median(batch) * 1000, cpu_single / calls * 1000, cpu_batch / calls * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
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
            server_single, server_batch, cpu_single, cpu_batch = latency_ms(
                url, args.calls, mlflow_pids + postgres_pids
            )
            mlflow_pids, postgres_pids = server_processes(layout)
            busy = rss_mb(mlflow_pids), rss_mb(postgres_pids)
        finally:
            stop(layout)
        for key in login:
            del os.environ[key]
        sqlite_single, sqlite_batch, _, _ = latency_ms(f"sqlite:///{folder}/local.db", args.calls)
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print("| figure | value |\n|---|---|")
    print(f"| cold start (new cluster, database, MLflow tables, server) | {cold:.1f} s |")
    print(f"| warm start (PostgreSQL and MLflow server on existing data) | {warm:.1f} s |")
    print(f"| stop (MLflow server's process group, then PostgreSQL) | {stopping:.1f} s |")
    print(
        f"| `log_metric`, median of {args.calls}: server / sqlite | {server_single:.1f} ms / {sqlite_single:.1f} ms |"
    )
    print(f"| `log_batch` of 100 metrics: server / sqlite | {server_batch:.1f} ms / {sqlite_batch:.1f} ms |")
    print(
        f"| server CPU per call (MLflow + PostgreSQL): `log_metric` / batch of 100 | {cpu_single:.1f} / {cpu_batch:.1f} ms |"
    )
    print(
        f"| RSS of the MLflow server's {len(mlflow_pids)} processes, idle / after the calls | {idle[0]:.0f} / {busy[0]:.0f} MB |"
    )
    print(
        f"| RSS of PostgreSQL's {len(postgres_pids)} processes (shared buffers counted in each), idle / after | {idle[1]:.0f} / {busy[1]:.0f} MB |"
    )


if __name__ == "__main__":
    main()
