"""Run a sweep file on Ray Tune: ``invaders-sweep sweeps/lr.yaml`` (``make sweep SWEEP=sweeps/lr.yaml``).

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
from pathlib import Path
from typing import Any

import pandas as pd

from invaders import files
from invaders.config import read_params_file
from invaders.errors import ResourceError
from invaders.names import Metric
from invaders.pipeline import exit_on_user_error
from invaders.sweeps.spec import SweepSpec, load_sweep
from invaders.sweeps.trial import AGENT_STEPS, EVALUATED, TRAIN_SCORE, SweepContext, run_trial

TOKEN_FILE = Path(".ray/auth_token")  # git-ignored, mode 0600: Ray's token for the local instance
LOCAL_NODE_ADDRESS = "127.0.0.2"
SWEEP_EXPERIMENT = "tracking.experiment"  # with 127.0.0.1 Ray advertises the machine's network address instead


def auth_token_path(root: Path) -> Path:
    """Ray's token file: ``RAY_AUTH_TOKEN_PATH`` if set, else ``.ray/auth_token``, generated on first use."""
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    path = root / TOKEN_FILE
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


def start_ray(root: Path) -> None:
    """Connect to ``RAY_ADDRESS``'s cluster, or start a local instance on loopback (token auth set by
    ``use_token_auth``)."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": {"DVC_EXP_BASELINE_REV": _commit(root), "PYTHONPATH": str(root / "src")}}
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    runtime_env["env_vars"]["MLFLOW_TRACKING_URI"] = uri or f"sqlite:///{root / 'mlflow.db'}"
    try:
        if address:
            # The workers get this repository's code; its .gitignore keeps the venv, stores and results out.
            runtime_env["working_dir"] = str(root)
            runtime_env["env_vars"].pop("PYTHONPATH")
            ray.init(address=address, runtime_env=runtime_env, logging_level="WARNING")
        else:
            ray.init(
                address="local",  # else Ray joins the host's last `ray start` cluster, anyone's, or fails on a stale one
                _node_ip_address=LOCAL_NODE_ADDRESS,
                include_dashboard=False,
                runtime_env=runtime_env,
                logging_level="WARNING",
                object_store_memory=256 * 2**20,  # the trials pass files, not objects
            )
    except (ConnectionError, RuntimeError) as error:
        where = f"RAY_ADDRESS = {address}" if address else "a local Ray instance"
        raise ResourceError(f"{where}: Ray did not start or answer ({str(error).splitlines()[0]})") from None


def _commit(root: Path) -> str:
    from invaders.tracking.mlflow_tracking import git_commit

    return git_commit(root)


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
        max_t=spec.steps,
        grace_period=spec.early_stopping.grace_steps,
        reduction_factor=spec.early_stopping.reduction_factor,
    )


def _state_file(storage: Path, spec: SweepSpec) -> Path:
    return storage / f"{spec.name}.sweep.json"


def _sweep_state(storage: Path, spec: SweepSpec, sweep_file: Path) -> dict[str, str]:
    """The parent run of an interrupted sweep of the same file, or {} for a new sweep."""
    state_file = _state_file(storage, spec)
    if not state_file.is_file():
        return {}
    state = json.loads(state_file.read_text())
    if state["file_sha256"] != hashlib.sha256(sweep_file.read_bytes()).hexdigest():
        raise ResourceError(
            f"{sweep_file}: sweep {spec.name!r} in {storage} was started from a different file; "
            f"give this one another name: or delete {storage / spec.name} and {state_file}"
        )
    return state


def run_sweep(sweep_file: Path, root: Path, storage: Path) -> pd.DataFrame:
    """Run (or resume) the sweep in ``sweep_file`` from the repository at ``root``; returns its trials table."""
    use_token_auth(root)
    from ray import tune

    from invaders.tracking.sweep_runs import close_trials, log_sweep_outcome, open_sweep_run

    raw_params = read_params_file(root / "params.yaml")
    spec = load_sweep(sweep_file, raw_params)  # every configuration validated before Ray starts
    # Trials get an experiment of their own: the report compares every agent of the pipeline's experiment.
    experiment = spec.params.get(SWEEP_EXPERIMENT) or f"{raw_params['tracking']['experiment']}-sweeps"
    spec = dataclasses.replace(spec, params={**spec.params, SWEEP_EXPERIMENT: experiment})
    storage = storage.resolve()
    storage.mkdir(parents=True, exist_ok=True)
    state = _sweep_state(storage, spec, sweep_file)
    start_ray(root)
    parent_run_id = open_sweep_run(experiment, spec.name, sweep_file, root, state.get("parent_run_id"))
    files.write_json(
        _state_file(storage, spec),
        {"parent_run_id": parent_run_id, "file_sha256": hashlib.sha256(sweep_file.read_bytes()).hexdigest()},
    )
    print(f"sweep {spec.name}: {spec.trials} trials of {spec.steps:,} agent steps; MLflow run {parent_run_id}")
    context = SweepContext(spec.name, parent_run_id, raw_params, tuple(d.key for d in spec.search))
    trainable = tune.with_resources(tune.with_parameters(run_trial, sweep=context), {"cpu": spec.trial_cpus})
    path = storage / spec.name
    if tune.Tuner.can_restore(str(path)):
        print(f"sweep {spec.name}: resuming from {path}")
        tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(spec),
            tune_config=tune.TuneConfig(num_samples=spec.samples, scheduler=_scheduler(spec)),
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
    """The searched values whose evaluated trials have the highest mean ``spec.metric`` across seeds."""
    done = table[table["status"] == "done"]
    if done.empty:
        return None
    keys = [d.key for d in spec.search]
    if not keys:
        return {spec.metric: float(done[spec.metric].mean()), "seeds": len(done), "overrides": {}}
    grouped = done.groupby(keys, dropna=False)[spec.metric].agg(["mean", "count"])
    values, row = grouped["mean"].idxmax(), grouped.loc[grouped["mean"].idxmax()]
    values = values if isinstance(values, tuple) else (values,)
    return {spec.metric: float(row["mean"]), "seeds": int(row["count"]), "overrides": dict(zip(keys, values))}


def reproduce_command(spec: SweepSpec, overrides: dict[str, Any]) -> str:
    """``dvc exp run`` with the sweep's fixed params and the winning values: DVC stays the record."""
    settings = {key: value for key, value in {**spec.fixed, **overrides}.items() if key != SWEEP_EXPERIMENT}
    return f"dvc exp run -n {spec.name}-best " + " ".join(f"-S {key}={_yaml(value)}" for key, value in settings.items())


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a sweep file on Ray Tune (RAY_ADDRESS: an existing cluster).")
    parser.add_argument("sweep", type=Path, help="the sweep file, e.g. sweeps/lr.yaml")
    parser.add_argument(
        "--storage", type=Path, default=Path("sweep_results"), help="Tune's storage (shared on multi-node)"
    )
    arguments = parser.parse_args(argv)
    with exit_on_user_error("sweep"):
        run_sweep(arguments.sweep, Path.cwd(), arguments.storage)


if __name__ == "__main__":
    main()
