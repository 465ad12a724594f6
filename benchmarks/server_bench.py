"""Figures of the team server (docs/server.md): cold and warm start, per-call latency of logging through it
against a local sqlite store, memory of its processes; with --backup, backup and restore of a store the size of
`make run`'s plus the shipped agents' registrations. Starts its own servers in a temporary folder on 127.0.0.1
and stops them at the end. `make server-bench` (ARGS="--backup")."""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from invaders.tracking.server import APP, Layout, ServerError, _free_port, check_app, start, stop
from invaders.tracking.server_users import add_user


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


class Calls(NamedTuple):
    single: list[float]  # ms of each log_metric
    batch: list[float]  # ms of each log_batch of 100 metrics
    cpu_single: float  # the server's CPU ms per log_metric (what it costs whatever else runs; 0 without pids)
    cpu_batch: float  # the same per log_batch
    client_single: float  # this process's CPU ms per log_metric (MLflow's client; sqlite's whole store for sqlite)
    client_batch: float  # the same per log_batch


def latency_ms(uri: str, calls: int, pids: list[int] | None = None) -> Calls:
    """``calls`` log_metric calls, then ``calls`` log_batch calls of 100 metrics, each timed."""
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
    cpu, mine = cpu_seconds(pids or []), time.process_time()
    for step in range(calls):
        began = time.perf_counter()
        client.log_metric(run_id, "x", float(step), step=step)
        single.append((time.perf_counter() - began) * 1000)
    cpu_single, cpu = cpu_seconds(pids or []) - cpu, cpu_seconds(pids or [])
    client_single, mine = time.process_time() - mine, time.process_time()
    for step in range(calls):
        metrics = [Metric(f"m{i}", float(i), 0, step) for i in range(100)]
        began = time.perf_counter()
        client.log_batch(run_id, metrics=metrics)
        batch.append((time.perf_counter() - began) * 1000)
    cpu_batch, client_batch = cpu_seconds(pids or []) - cpu, time.process_time() - mine
    return Calls(
        single, batch, *(seconds / calls * 1000 for seconds in (cpu_single, cpu_batch, client_single, client_batch))
    )


def compare(servers: dict[str, tuple], sqlite_uri: str, calls: int, rounds: int) -> dict[str, dict]:
    """Medians of each server's and of sqlite's calls (``servers``: name -> (URL, its PIDs, its login's
    MLFLOW_TRACKING_* variables)), measured in
    alternating rounds: the load of the machine changes by the minute, and every store sees the same."""
    averaged = ("cpu_single", "cpu_batch", "client_single", "client_batch")
    found = {name: {"single": [], "batch": [], **dict.fromkeys(averaged, 0.0)} for name in [*servers, "sqlite"]}
    for _ in range(rounds):
        for name, (url, pids, login) in [*servers.items(), ("sqlite", (sqlite_uri, [], {}))]:
            os.environ.update(login)
            try:
                measured = latency_ms(url, calls // rounds, pids)
            finally:
                for key in login:
                    del os.environ[key]
            found[name]["single"] += measured.single
            found[name]["batch"] += measured.batch
            for key in averaged:
                found[name][key] += getattr(measured, key) / rounds
    return {
        name: {**values, "single": statistics.median(values["single"]), "batch": statistics.median(values["batch"])}
        for name, values in found.items()
    }


TRAIN_ROWS = 1_000  # metric rows per key of a train run: one per 1,000 agent steps of a 1M-step run
GAMES = 30  # evaluation games per agent


def fill_like_make_run(url: str, shipped: Path) -> tuple[int, int]:
    """Log, per shipped agent, a train run (the curve's 8 metrics, TRAIN_ROWS rows each), an evaluate run
    (GAMES scores) with the agent's files as artifacts, registered as a version of the project's model with
    the champion alias on the last; plus a baseline, a build-model and a report run. Returns (runs, versions)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.create_experiment("space-invaders-dqn")
    model = client.create_registered_model("space-invaders-dqn").name
    keys = ("steps_per_second", "epsilon", "episodes", "updates", "loss", "q_mean", "episode_return", "score")
    agents = sorted(path for path in shipped.iterdir() if (path / "agent.json").exists())
    runs = versions = 0
    for stage in ("baseline", "build-model", "report"):
        run_id = client.create_run(experiment, tags={"invaders.stage": stage}).info.run_id
        client.log_batch(run_id, metrics=[Metric(f"{stage}/x", 1.0, 0, 0)])
        client.set_terminated(run_id)
        runs += 1
    for agent in agents:
        train = client.create_run(experiment, tags={"invaders.stage": "train", "agent": agent.name}).info.run_id
        rows = [Metric(f"train/{key}", float(step), 0, step * 1000) for key in keys for step in range(TRAIN_ROWS)]
        for first in range(0, len(rows), 1000):  # MLflow's limit per log_batch
            client.log_batch(train, metrics=rows[first : first + 1000])
        client.set_terminated(train)
        evaluate = client.create_run(experiment, tags={"invaders.stage": "evaluate", "agent": agent.name})
        scores = [Metric("evaluation/game_score", 100.0 + game, 0, game) for game in range(GAMES)]
        client.log_batch(evaluate.info.run_id, metrics=scores)
        client.log_artifacts(evaluate.info.run_id, str(agent), "agent")
        client.set_terminated(evaluate.info.run_id)
        version = client.create_model_version(model, f"{evaluate.info.artifact_uri}/agent", evaluate.info.run_id)
        client.set_registered_model_alias(model, "champion", version.version)
        runs, versions = runs + 2, versions + 1
    return runs, versions


def backup_figures(folder: Path, shipped: Path) -> None:
    """Backup and restore times and the archive's size, on a server filled by ``fill_like_make_run``."""
    from invaders.tracking.server_backup import backup, restore

    source, target = Layout(folder / "source"), Layout(folder / "restored")
    source.root.mkdir(mode=0o711)
    try:
        url = start(source, port=_free_port())
        login = add_user(source, "bench", "EDIT", "bench").read_text()
        os.environ.update(dict(line.removeprefix("export ").split("=", 1) for line in login.splitlines()))
        began = time.monotonic()
        runs, versions = fill_like_make_run(url, shipped)
        filled = time.monotonic() - began
        began = time.monotonic()
        archive = backup(source)
        saved = time.monotonic() - began
        began = time.monotonic()
        restore(archive, target)
        restored = time.monotonic() - began
        began = time.monotonic()
        restored_url = start(target, port=_free_port())
        warm = time.monotonic() - began
        from mlflow.tracking import MlflowClient

        copy = MlflowClient(tracking_uri=restored_url)
        experiment = copy.get_experiment_by_name("space-invaders-dqn").experiment_id
        assert len(copy.search_runs([experiment], max_results=1000)) == runs, "every run came back"
        assert copy.get_model_version_by_alias("space-invaders-dqn", "champion").version == str(versions)
    finally:
        for layout in (source, target):
            if layout.root.exists():
                stop(layout)
    artifacts = sum(path.stat().st_size for path in source.artifacts.rglob("*") if path.is_file()) / 2**20
    print(
        f"store: {runs} runs, {versions} registered versions, {artifacts:.1f} MiB of artifacts (filled in {filled:.0f} s)"
    )
    print("| figure | value |\n|---|---|")
    print(f"| backup (pg_dump while the server runs + artifacts, one tar) | {saved:.1f} s |")
    print(f"| archive size | {archive.stat().st_size / 2**20:.1f} MiB |")
    print(f"| restore into a new folder (new cluster, pg_restore, artifacts) | {restored:.1f} s |")
    print(f"| start of the restored server | {warm:.1f} s |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=4, help="the servers and sqlite take turns this many times")
    parser.add_argument(
        "--apps", default=APP, help=f"MLflow apps to compare, each on a server of its own (e.g. {APP},basic-auth)"
    )
    parser.add_argument("--backup", action="store_true", help="measure backup and restore instead of the calls")
    args = parser.parse_args()
    if args.backup:
        with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as folder:
            os.chmod(folder, 0o711)  # as root, PostgreSQL runs as `postgres` and must reach its folder
            backup_figures(Path(folder), Path(__file__).resolve().parent.parent / "shipped")
        return
    apps = args.apps.split(",")
    for app in apps:
        try:
            check_app(app)
        except ServerError as error:
            parser.error(f"--apps {args.apps}: {error}")
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR", "/var/tmp")) as folder:
        os.chmod(folder, 0o711)  # as root, PostgreSQL runs as `postgres` and must reach its folder
        layouts = {app: Layout(Path(folder) / app) for app in apps}
        servers, idle, started, login = {}, {}, {}, {}
        try:
            for number, (app, layout) in enumerate(layouts.items()):
                layout.root.mkdir(mode=0o711)
                port = 5099 - number
                began = time.monotonic()
                url = start(layout, port=port, app=app)
                cold = time.monotonic() - began
                began = time.monotonic()
                stop(layout)
                stopping = time.monotonic() - began
                began = time.monotonic()
                start(layout, port=port, app=app)
                started[app] = cold, time.monotonic() - began, stopping
                # each server has its own admin, so the same user name gets its own password on each
                login[app] = dict(
                    line.removeprefix("export ").split("=", 1)
                    for line in add_user(layout, "bench", "EDIT", "bench").read_text().splitlines()
                )
                mlflow_pids, postgres_pids = server_processes(layout)
                idle[app] = rss_mb(mlflow_pids), rss_mb(postgres_pids)
                servers[app] = url, mlflow_pids + postgres_pids, login[app]
            for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                os.environ.pop(key, None)  # add_user logs in as the admin: each server's calls use their login
            loads.append(os.getloadavg()[0])
            figures = compare(servers, f"sqlite:///{folder}/local.db", args.calls, args.rounds)
            loads.append(os.getloadavg()[0])
            busy = {app: [rss_mb(pids) for pids in server_processes(layout)] for app, layout in layouts.items()}
            counts = {app: [len(pids) for pids in server_processes(layout)] for app, layout in layouts.items()}
        finally:
            for layout in layouts.values():
                stop(layout)
    print(
        f"load average (1 min) before / during / after the calls: {' / '.join(f'{x:.1f}' for x in loads)} on {os.cpu_count()} cores"
    )
    sqlite = figures["sqlite"]
    for app in apps:
        cold, warm, stopping = started[app]
        mine = figures[app]
        print(f"\n{app}:\n| figure | value |\n|---|---|")
        print(f"| cold start (new cluster, database, MLflow tables, server) | {cold:.1f} s |")
        print(f"| warm start (PostgreSQL and MLflow server on existing data) | {warm:.1f} s |")
        print(f"| stop (MLflow server's process group, then PostgreSQL) | {stopping:.1f} s |")
        print(
            f"| `log_metric`, median of {args.calls}: server / sqlite | {mine['single']:.1f} ms / {sqlite['single']:.1f} ms |"
        )
        print(f"| `log_batch` of 100 metrics: server / sqlite | {mine['batch']:.1f} ms / {sqlite['batch']:.1f} ms |")
        print(
            f"| server CPU per call (MLflow + PostgreSQL): `log_metric` / batch of 100 | {mine['cpu_single']:.1f} / {mine['cpu_batch']:.1f} ms |"
        )
        print(
            f"| RSS of the MLflow server's {counts[app][0]} processes, idle / after the calls | {idle[app][0]:.0f} / {busy[app][0]:.0f} MB |"
        )
        print(
            f"| RSS of PostgreSQL's {counts[app][1]} processes (shared buffers counted in each), idle / after | {idle[app][1]:.0f} / {busy[app][1]:.0f} MB |"
        )
    print(
        "\n| client CPU per call (this process: MLflow's client; for sqlite the whole store) | `log_metric` / batch of 100 |"
    )
    print("|---|---|")
    for name, mine in figures.items():
        print(f"| {name} | {mine['client_single']:.1f} / {mine['client_batch']:.1f} ms |")
    if len(apps) > 1:
        print("\n| server | `log_metric` | batch of 100 | server CPU: `log_metric` / batch |\n|---|---|---|---|")
        for name, mine in figures.items():
            cpu = "-" if name == "sqlite" else f"{mine['cpu_single']:.1f} / {mine['cpu_batch']:.1f} ms"
            print(f"| {name} | {mine['single']:.1f} ms | {mine['batch']:.1f} ms | {cpu} |")


if __name__ == "__main__":
    main()
