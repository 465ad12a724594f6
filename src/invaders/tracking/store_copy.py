"""Copy the runs of a local MLflow store into the team server: ``make server-import DB=mlflow.db``.

Every experiment with its tags; every run with its name, status, start and end times, params, tags, the
whole history of every metric (each value with its step and timestamp) and its artifacts; every MLflow 3
logged model (``models:/m-...``: name, type, params, tags, metrics, status and artifacts, linked to its
copied run); every registered model with its tags, description, versions (their source moved to the copied
run's artifacts or the copied logged model, their tags and description) and aliases, so that
``models:/NAME/VERSION`` and ``models:/NAME@ALIAS`` load on the server. A copied run, logged model and version
carries the tag ``invaders.copied_from`` (the source's id), so the command can be run again: what was copied
is skipped, what is new is copied. Traces are not copied.

The server is ``MLFLOW_TRACKING_URI`` with the user's login, or else the one ``make server`` runs here, as
its admin.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

from invaders.errors import UserError
from invaders.tracking.store import check_store, client_for, server_errors

COPIED_FROM = "invaders.copied_from"  # on a copied run: the id of the run it copies
_METRICS_PER_BATCH = 1000  # MLflow's limit per log_batch
_PARAMS_PER_BATCH = 100
_MODEL_VERSIONS_TAG = "mlflow.modelVersions"  # on a logged model: the registered versions made from it


def source_uri(database: Path) -> str:
    """The sqlite URI of ``database``, checked to be an MLflow store."""
    if not database.is_file():
        raise UserError(f"DB={database}: no such file (a local MLflow store, like mlflow.db)")
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            tables = {row[0] for row in connection.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as error:
        raise UserError(f"DB={database}: not a sqlite database ({error})") from None
    if not {"experiments", "runs", "metrics"} <= tables:
        raise UserError(f"DB={database}: not an MLflow store (no experiments/runs tables)")
    return f"sqlite:///{database.resolve()}"


def _everything(search, **kwargs) -> list:
    """Every page of an MLflow search."""
    found, token = [], None
    while True:
        page = search(**kwargs, page_token=token) if token else search(**kwargs)
        found += list(page)
        token = getattr(page, "token", None)
        if not token:
            return found


class Copier:
    def __init__(self, source, target):
        self.source = source
        self.target = target
        self.runs: dict[str, str] = {}  # source run id -> copied run id
        self.models: dict[str, str] = {}  # source logged model id -> copied logged model id
        self.counts = {
            "experiments": 0,
            "runs": 0,
            "skipped": 0,
            "metric values": 0,
            "artifacts": 0,
            "logged models": 0,
            "versions": 0,
        }

    def experiment(self, experiment) -> None:
        found = self.target.get_experiment_by_name(experiment.name)
        if found is None:
            tags = {
                key: value
                for key, value in experiment.tags.items()
                if not key.startswith("mlflow.") or key == "mlflow.experimentKind"
            }
            target_id = self.target.create_experiment(experiment.name, tags=tags)
        else:
            target_id = found.experiment_id
        self.counts["experiments"] += 1
        copied = {
            run.data.tags[COPIED_FROM]: run.info.run_id
            for run in _everything(
                self.target.search_runs,
                experiment_ids=[target_id],
                filter_string=f"tags.`{COPIED_FROM}` != ''",
                max_results=1000,
            )
        }
        for run in _everything(
            self.source.search_runs,
            experiment_ids=[experiment.experiment_id],
            max_results=1000,
            order_by=["attributes.start_time ASC"],
        ):
            if run.info.run_id in copied:
                self.runs[run.info.run_id] = copied[run.info.run_id]
                self.counts["skipped"] += 1
            else:
                self.runs[run.info.run_id] = self.run(run, target_id)
        self.logged_models(experiment.experiment_id, target_id)

    def run(self, run, target_id: str) -> str:
        from mlflow.entities import Metric, Param, RunTag

        # marked as copied only at the end: a copy cut short is made again by the next import
        created = self.target.create_run(
            target_id, start_time=run.info.start_time, tags=run.data.tags, run_name=run.info.run_name
        )
        run_id = created.info.run_id
        params = [Param(key, value) for key, value in run.data.params.items()]
        for start in range(0, len(params), _PARAMS_PER_BATCH):
            self.target.log_batch(run_id, params=params[start : start + _PARAMS_PER_BATCH])
        metrics = [
            Metric(key, point.value, point.timestamp, point.step)
            for key in run.data.metrics
            for point in self.source.get_metric_history(run.info.run_id, key)
        ]
        for start in range(0, len(metrics), _METRICS_PER_BATCH):
            self.target.log_batch(run_id, metrics=metrics[start : start + _METRICS_PER_BATCH])
        self.counts["metric values"] += len(metrics)
        if self.source.list_artifacts(run.info.run_id):
            with tempfile.TemporaryDirectory() as folder:
                local = self.source.download_artifacts(run.info.run_id, "", folder)
                self.counts["artifacts"] += sum(1 for path in Path(local).rglob("*") if path.is_file())
                self.target.log_artifacts(run_id, local)
        self.target.log_batch(run_id, tags=[RunTag(COPIED_FROM, run.info.run_id)])
        if run.info.status != "RUNNING":
            self.target.set_terminated(run_id, status=run.info.status, end_time=run.info.end_time)
        self.counts["runs"] += 1
        return run_id

    def logged_models(self, source_id: str, target_id: str) -> None:
        copied = {
            model.tags[COPIED_FROM]: model.model_id
            for model in _everything(self.target.search_logged_models, experiment_ids=[target_id])
            if COPIED_FROM in model.tags
        }
        for model in _everything(self.source.search_logged_models, experiment_ids=[source_id]):
            found = copied.get(model.model_id)
            self.models[model.model_id] = found or self.logged_model(model, target_id)

    def logged_model(self, model, target_id: str) -> str:
        import mlflow.artifacts
        from mlflow.entities import Metric

        # the target's registry writes its own list of the versions made from the model
        tags = {key: value for key, value in model.tags.items() if key != _MODEL_VERSIONS_TAG}
        model_id = self.target.create_logged_model(
            target_id, model.name, self.runs.get(model.source_run_id), tags, model.params, model.model_type
        ).model_id
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=folder)
            self.counts["artifacts"] += sum(1 for path in Path(local).rglob("*") if path.is_file())
            self.target.log_model_artifacts(model_id, local)
        for metric in model.metrics or []:  # each also belongs to a run, whose copy it joins
            if metric.run_id in self.runs:
                copied = Metric(
                    metric.key, metric.value, metric.timestamp, metric.step,
                    model_id, metric.dataset_name, metric.dataset_digest,
                )  # fmt: skip
                self.target.log_batch(self.runs[metric.run_id], metrics=[copied])
        self.target.set_logged_model_tags(model_id, {COPIED_FROM: model.model_id})
        if str(model.status) in ("READY", "FAILED"):
            self.target.finalize_logged_model(model_id, str(model.status))
        self.counts["logged models"] += 1
        return model_id

    def registered_model(self, model) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.target.create_registered_model(model.name, tags=model.tags, description=model.description)
            existing = set()
        except MlflowException as error:
            if error.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            existing = {
                version.tags.get(COPIED_FROM)
                for version in _everything(self.target.search_model_versions, filter_string=f"name = '{model.name}'")
            }
        numbers = {}  # source version -> copied version
        versions = _everything(self.source.search_model_versions, filter_string=f"name = '{model.name}'")
        for version in sorted(versions, key=lambda version: int(version.version)):
            key = f"{version.run_id}:{version.version}"
            model_id = self.models.get(_logged_model_id(version))
            if key in existing or not (model_id or version.run_id in self.runs):
                continue
            copied = self.target.create_model_version(
                model.name,
                f"models:/{model_id}" if model_id else self._moved_source(version),
                run_id=self.runs.get(version.run_id),
                tags=version.tags,
                description=version.description,
                model_id=model_id,
            )
            self.target.set_model_version_tag(model.name, copied.version, COPIED_FROM, key)
            numbers[str(version.version)] = str(copied.version)
            self.counts["versions"] += 1
        for alias, version in self.source.get_registered_model(model.name).aliases.items():
            if str(version) in numbers:
                self.target.set_registered_model_alias(model.name, alias, numbers[str(version)])

    def _moved_source(self, version) -> str:
        """A version's source in the run's artifacts, moved to the copied run's artifacts."""
        source_run = self.source.get_run(version.run_id).info.artifact_uri
        target_run = self.target.get_run(self.runs[version.run_id]).info.artifact_uri
        return version.source.replace(source_run, target_run, 1)


def _logged_model_id(version) -> str | None:
    """The MLflow 3 logged model a version was made from (its ``model_id``, or a ``models:/m-...`` source)."""
    if version.model_id:
        return version.model_id
    if version.source.startswith("models:/m-"):
        return version.source.removeprefix("models:/").split("/")[0]
    return None


def copy_store(source_uri_: str, target_uri: str) -> dict[str, int]:
    """Copy every run and registered model of ``source_uri_`` into ``target_uri``; returns counts."""
    copier = Copier(client_for(source_uri_), client_for(target_uri))
    for experiment in _everything(copier.source.search_experiments, max_results=1000):
        if experiment.name == "Default" and not copier.source.search_runs([experiment.experiment_id], max_results=1):
            continue
        copier.experiment(experiment)
    for model in _everything(copier.source.search_registered_models, max_results=1000):
        copier.registered_model(model)
    return copier.counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m invaders.tracking.store_copy", description=__doc__.split("\n")[0])
    parser.add_argument("database", type=Path, help="the local store, e.g. mlflow.db")
    parser.add_argument("--server-dir", type=Path, default=None, help="the make server folder (default .server/)")
    args = parser.parse_args(argv)
    try:
        source = source_uri(args.database)
        if not os.environ.get("MLFLOW_TRACKING_URI"):
            from invaders.tracking.server import Layout, admin_env, default_dir

            os.environ.update(admin_env(Layout((args.server_dir or default_dir()).resolve())))
        target = os.environ["MLFLOW_TRACKING_URI"]
        if not target.startswith(("http://", "https://")):
            raise UserError(f"MLFLOW_TRACKING_URI = {target}: the copy goes to a server (http://...)")
        check_store(target)
        with server_errors(target):
            counts = copy_store(source, target)
    except UserError as error:
        print(f"server-import: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    summary = ", ".join(f"{count} {what}" for what, count in counts.items())
    print(f"server-import: {args.database} -> {target}: {summary}", file=sys.stderr)


if __name__ == "__main__":
    main()
