"""Run a sweep file on Ray Tune: ``invaders-sweep sweeps/learning-rate.yaml``
(``make sweep SWEEP=sweeps/learning-rate.yaml``).

On a local Ray instance by default (its ports on 127.0.0.2, token authentication), or on the cluster at
``RAY_ADDRESS``. Tune keeps the sweep in ``sweep_results/<name>`` (``--storage`` for a shared filesystem or
object store on a multi-node cluster); the same command resumes an interrupted sweep there. Ends with the
table of trials, the best configuration and the ``dvc exp run`` command that reproduces it.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import secrets
import shlex
import socket
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from invaders import files
from invaders.config import ConfigError, build_params, read_params_file
from invaders.errors import ResourceError
from invaders.names import Metric
from invaders.pipeline import exit_on_user_error
from invaders.repository import git_commit
from invaders.sweeps.local_ray import local_instance
from invaders.sweeps.spec import SweepSpec, load_sweep
from invaders.sweeps.trial import AGENT_STEPS, EVALUATED, TRAIN_SCORE, SweepContext, run_trial

TOKEN_FILE = Path(".ray/auth_token")  # git-ignored, mode 0600: Ray's token for the local instance
LOCAL_INSTANCE_LOG = Path(".ray/local_instance.log")  # git-ignored: what the local instance's `ray start` printed
LOCAL_NODE_ADDRESS = "127.0.0.2"  # with 127.0.0.1 Ray advertises the machine's network address instead
EXPERIMENT_KEY = "tracking.experiment"  # the params key naming the trials' MLflow experiment


def auth_token_path(root: Path) -> Path:
    """Ray's token file: ``RAY_AUTH_TOKEN_PATH`` if set, else ``.ray/auth_token``, generated on first use for a
    local instance (a cluster's token comes from whoever started it)."""
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    path = root / TOKEN_FILE
    if not path.is_file() and os.environ.get("RAY_ADDRESS"):
        raise ResourceError(
            f"RAY_ADDRESS = {os.environ['RAY_ADDRESS']}: set RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN) to the "
            "cluster's token file"
        )
    if not path.is_file():
        path.parent.mkdir(mode=0o700, exist_ok=True)
        with files.atomic_path(path) as temporary:
            temporary.write_text(secrets.token_hex(32))
            temporary.chmod(0o600)
    return path


def use_token_auth(root: Path) -> None:
    """Make Ray require its token: read when ray is first imported, so call this before."""
    os.environ["RAY_AUTH_MODE"] = "token"
    if not os.environ.get("RAY_AUTH_TOKEN"):
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(auth_token_path(root))


def check_cluster_answers(address: str) -> None:
    """One line at once for a cluster address nothing listens on (``ray.init`` would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError) as error:
        raise ResourceError(f"RAY_ADDRESS = {address}: no Ray cluster answers there ({error})") from None


@contextmanager
def connected_ray(root: Path, commit: str) -> Iterator[None]:
    """Connect to ``RAY_ADDRESS``'s cluster, or to a local instance on loopback that lives as long as this
    process (token auth set by ``use_token_auth``); disconnect after."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        check_cluster_answers(address)
    runtime_env: dict[str, Any] = {
        "env_vars": {"DVC_EXP_BASELINE_REV": commit, "MLFLOW_TRACKING_URI": tracking_uri_for_workers(root)}
    }
    with ExitStack() as stack:
        if address:
            # The workers import this checkout's package (before their own install); the venv is theirs.
            runtime_env["py_modules"] = [str(root / "src" / "invaders")]
        else:
            instance = local_instance(
                LOCAL_NODE_ADDRESS,
                os.cpu_count() or 1,
                256 * 2**20,  # object store bytes: the trials pass files, not objects
                root / LOCAL_INSTANCE_LOG,
            )
            address = stack.enter_context(instance)
        try:
            ray.init(address=address, runtime_env=runtime_env, logging_level="WARNING")
        except (ConnectionError, RuntimeError) as error:
            where = f"RAY_ADDRESS = {address}" if os.environ.get("RAY_ADDRESS") else "a local Ray instance"
            raise ResourceError(f"{where}: Ray did not start or answer ({str(error).splitlines()[0]})") from None
        stack.callback(ray.shutdown)
        yield


def tracking_uri_for_workers(root: Path) -> str:
    """The tracking URI the trials log to; a login written into it would reach Ray's logs, so it is refused."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{root / 'mlflow.db'}"
    if "@" in urllib.parse.urlsplit(uri).netloc:
        raise ResourceError(
            "MLFLOW_TRACKING_URI holds a login: give it to each node as MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD instead"
        )
    if os.environ.get("RAY_ADDRESS") and uri.startswith("sqlite:"):
        print(f"sweep: {uri} is this machine's file: workers on other machines need a tracking server", file=sys.stderr)
    return uri


def search_space(spec: SweepSpec) -> dict[str, Any]:
    """Tune's ``param_space``: the fixed overrides, one Tune domain per searched key, the seeds as a grid."""
    from ray import tune

    domains = {
        "grid": tune.grid_search,
        "choice": tune.choice,
        "uniform": lambda values: tune.uniform(*values),
        "loguniform": lambda values: tune.loguniform(*values),
    }
    space: dict[str, Any] = dict(spec.fixed)
    for dimension in spec.search:
        space[dimension.key] = domains[dimension.domain](list(dimension.values))
    space["train.seed"] = tune.grid_search(list(spec.seeds))
    return space


def _scheduler(spec: SweepSpec):
    if spec.early_stopping is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr=AGENT_STEPS,
        metric=TRAIN_SCORE,
        mode="max",
        max_t=spec.steps + 1,  # a trial reporting its whole budget still gets evaluated
        grace_period=spec.early_stopping.grace_steps,
        reduction_factor=spec.early_stopping.reduction_factor,
    )


def _state_file(storage: Path, spec: SweepSpec) -> Path:
    return storage / f"{spec.name}.sweep.json"


def _sweep_state(storage: Path, spec: SweepSpec, sweep_file: Path, started_from: dict[str, str]) -> dict[str, str]:
    """The parent run of an interrupted sweep started from the same file, params and commit, or {} for a new one."""
    state_file = _state_file(storage, spec)
    if not state_file.is_file():
        return {}
    state = json.loads(state_file.read_text())
    changed = [what for what, value in started_from.items() if state.get(what) != value]
    if changed:
        names = {"file_sha256": "sweep file", "params_sha256": "params.yaml", "commit": "commit"}
        raise ResourceError(
            f"{sweep_file}: sweep {spec.name!r} in {storage} was started with another "
            f"{' and '.join(names[what] for what in changed)}; give this one another name: or delete "
            f"{storage / spec.name} and {state_file}"
        )
    return state


def run_sweep(sweep_file: Path, root: Path, storage: Path) -> pd.DataFrame:
    """Run (or resume) the sweep in ``sweep_file`` from the repository at ``root``; returns its trials table."""
    use_token_auth(root)
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # ASHA's score comes only with training checkpoints
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from invaders.tracking.sweep_runs import close_trials, log_sweep_outcome, open_sweep_run

    raw_params = read_params_file(root / "params.yaml")
    spec = load_sweep(sweep_file, raw_params)  # every configuration validated before Ray starts
    # Trials get an experiment of their own: the report compares every agent of the pipeline's experiment.
    experiment = spec.params.get(EXPERIMENT_KEY) or f"{build_params(raw_params).tracking.experiment}-sweeps"
    spec = dataclasses.replace(spec, params={**spec.params, EXPERIMENT_KEY: experiment})
    if not os.environ.get("RAY_ADDRESS") and spec.trial_cpus > (os.cpu_count() or 1):
        raise ConfigError(f"{sweep_file}: trial_cpus = {spec.trial_cpus:g}: this machine has {os.cpu_count()} CPUs")
    storage = storage.resolve()
    storage.mkdir(parents=True, exist_ok=True)
    started_from = {
        "file_sha256": hashlib.sha256(sweep_file.read_bytes()).hexdigest(),
        "params_sha256": hashlib.sha256(json.dumps(raw_params, sort_keys=True, default=str).encode()).hexdigest(),
        "commit": git_commit(root),
    }
    state = _sweep_state(storage, spec, sweep_file, started_from)
    with connected_ray(root, started_from["commit"]):
        parent_run_id = open_sweep_run(experiment, spec.name, sweep_file, root, state.get("parent_run_id"))
        files.write_json(_state_file(storage, spec), {"parent_run_id": parent_run_id, **started_from})
        print(f"sweep {spec.name}: {spec.trials} trials of {spec.steps:,} agent steps; MLflow run {parent_run_id}")
        path = storage / spec.name
        context = SweepContext(parent_run_id, raw_params, tuple(d.key for d in spec.search), str(path))
        trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=context), {"cpu": spec.trial_cpus})
        if tune.Tuner.can_restore(str(path)):
            print(f"sweep {spec.name}: resuming from {path}")
            tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=search_space(spec),
                tune_config=tune.TuneConfig(
                    num_samples=spec.samples,
                    scheduler=_scheduler(spec),
                    # the same random draws for every seed: a configuration is trained once per seed
                    search_alg=BasicVariantGenerator(constant_grid_search=True),
                ),
                run_config=tune.RunConfig(
                    name=spec.name,
                    storage_path=str(storage),
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    verbose=1,
                ),
            )
        try:
            results = tuner.fit()
            # Tune takes the first Ctrl-C itself: it saves its state and returns, the interrupted trials not done
            if any(not result.error and not (result.metrics or {}).get("done") for result in results):
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            close_trials(parent_run_id, set(), "KILLED", sweep_status="KILLED")  # the same command resumes them
            raise
        except BaseException:
            close_trials(parent_run_id, set(), "FAILED", sweep_status="FAILED")
            raise
        table = trials_table(results, spec)
        stopped = {result.metrics["trial_id"] for result in results if result.metrics and not result.error}
        close_trials(parent_run_id, stopped, "FAILED", sweep_status="FINISHED")
        table_file = storage / f"{spec.name}.trials.csv"
        with files.atomic_path(table_file) as temporary:
            table.to_csv(temporary, index=False)
        best = best_configuration(table, spec)
        log_sweep_outcome(parent_run_id, table_file, {f"best_{spec.metric}": best[spec.metric]} if best else {})
        print(table.to_string(index=False))
        if best:
            print(f"best configuration: {spec.metric} {best[spec.metric]:.1f} over {best['seeds']} seeds")
            print("reproduce it in the pipeline: " + reproduce_command(spec, best["overrides"]))
        return table


def trials_table(results, spec: SweepSpec) -> pd.DataFrame:
    """One row per trial: its varied params, seed, status and scores (mean and CI of its evaluation)."""
    rows = []
    for result in results:
        config = result.config or {}
        metrics = result.metrics or {}
        status = "error" if result.error else "done" if metrics.get(EVALUATED) else "stopped early"
        rows.append(
            {
                **{d.key: config.get(d.key) for d in spec.search},
                "seed": config.get("train.seed"),
                "status": status,
                "agent steps": metrics.get(AGENT_STEPS, 0),
                TRAIN_SCORE: metrics.get(TRAIN_SCORE),
                Metric.SCORE_MEAN: metrics.get(Metric.SCORE_MEAN),
                Metric.SCORE_CI_LOW: metrics.get(Metric.SCORE_CI_LOW),
                Metric.SCORE_CI_HIGH: metrics.get(Metric.SCORE_CI_HIGH),
                Metric.SCORE_MEDIAN: metrics.get(Metric.SCORE_MEDIAN),
            }
        )
    return pd.DataFrame(rows).sort_values(["seed", *[d.key for d in spec.search]], ignore_index=True)


def best_configuration(table: pd.DataFrame, spec: SweepSpec) -> dict[str, Any] | None:
    """The searched values whose evaluated trials have the highest mean ``spec.metric`` across seeds; those with
    every seed evaluated first (under early stopping, the survivors of a configuration are its lucky seeds)."""
    done = table[table["status"] == "done"]
    if done.empty:
        return None
    keys = [d.key for d in spec.search]
    if not keys:
        return {spec.metric: float(done[spec.metric].mean()), "seeds": len(done), "overrides": {}}
    grouped = done.groupby(keys, dropna=False)[spec.metric].agg(["mean", "count"])
    complete = grouped[grouped["count"] == len(spec.seeds)]
    grouped = complete if not complete.empty else grouped
    values, row = grouped["mean"].idxmax(), grouped.loc[grouped["mean"].idxmax()]
    values = values if isinstance(values, tuple) else (values,)
    return {spec.metric: float(row["mean"]), "seeds": int(row["count"]), "overrides": dict(zip(keys, values))}


def reproduce_command(spec: SweepSpec, overrides: dict[str, Any]) -> str:
    """``dvc exp run`` with the sweep's fixed params and the winning values: DVC stays the record."""
    settings = {key: value for key, value in {**spec.fixed, **overrides}.items() if key != EXPERIMENT_KEY}
    return f"dvc exp run -n {spec.name}-best " + " ".join(
        f"-S {shlex.quote(f'{key}={_yaml(value)}')}" for key, value in settings.items()
    )


def _yaml(value: Any) -> str:
    """``value`` as a YAML flow scalar or list, as ``-S`` parses it."""
    value = value.item() if hasattr(value, "item") else value  # numpy scalars from the trials table
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a sweep file on Ray Tune (RAY_ADDRESS: an existing cluster).")
    parser.add_argument("sweep", type=Path, help="the sweep file, e.g. sweeps/learning-rate.yaml")
    parser.add_argument(
        "--storage", type=Path, default=Path("sweep_results"), help="Tune's storage (shared on multi-node)"
    )
    arguments = parser.parse_args(argv)
    with exit_on_user_error("sweep"):
        run_sweep(arguments.sweep, Path.cwd(), arguments.storage)


if __name__ == "__main__":
    main()
