"""``mlflow server --app-name invaders-auth``: MLflow's basic-auth app, with cheaper checks on run requests.

Registered as an ``mlflow.app`` entry point in pyproject.toml (``make setup`` installs it). Every route, login,
grant and answer is basic-auth's own (``mlflow.server.auth``); what changes is how a request that names a run
(``log_metric``, ``log_batch``, ``set_tag``, ``get_run``...) is authorized:

- basic-auth loads the whole run (info, params, tags, latest metrics, dataset and model inputs and outputs:
  7 queries) only to read its experiment id. A run never changes experiment, so the id is read with one
  small query the first time and then kept (``RUNS_KEPT`` runs, least recently used first out). Nothing is
  kept for a run that does not exist: it is denied as before, and asked again next time.
- basic-auth reads the user twice per request (once to ask "admin?", once for the grants). Here the user row
  is read once per request.

Grants are still read on every request, so a revoked or changed grant applies to the very next request,
as in basic-auth. A deleted run keeps its experiment, so keeping the id is right for it too; a run that
``mlflow gc`` erased is denied by the handler (not found) instead of by the check.

With MLflow's workspaces on (``MLFLOW_ENABLE_WORKSPACES``) or a store that is not SQL, nothing is changed.
"""

from __future__ import annotations

import threading

from cachetools import LRUCache
from flask import g, has_request_context
from mlflow.server import auth as basic_auth

RUNS_KEPT = 100_000  # ~100 bytes each: ~10 MB at most per worker

_experiment_of_run: LRUCache[str, str] = LRUCache(maxsize=RUNS_KEPT)
_lock = threading.Lock()  # cachetools' caches are not thread-safe (gunicorn may run threaded workers)
_original_run_requirement = basic_auth._run_requirement


def _run_experiment_id(run_id: str) -> str | None:
    """The run's experiment id (None: no such run), from the cache or one small query."""
    with _lock:
        found = _experiment_of_run.get(run_id)
    if found is not None:
        return found
    from mlflow.store.tracking.dbmodels.models import SqlRun

    store = basic_auth._get_tracking_store()
    with store.ManagedSessionMaker() as session:
        row = session.query(SqlRun.experiment_id).filter(SqlRun.run_uuid == run_id).one_or_none()
    if row is None:
        return None
    experiment_id = str(row[0])
    with _lock:
        _experiment_of_run[run_id] = experiment_id
    return experiment_id


def _run_requirement(run_id: str, action: str):
    """basic-auth's ``_run_requirement`` (what a request on a run needs), without loading the run."""
    from mlflow.environment_variables import MLFLOW_ENABLE_WORKSPACES
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if MLFLOW_ENABLE_WORKSPACES.get() or not isinstance(basic_auth._get_tracking_store(), SqlAlchemyStore):
        return _original_run_requirement(run_id, action)
    experiment_id = _run_experiment_id(run_id)
    if experiment_id is None:
        return None  # denied, as basic-auth denies a run it does not find
    experiment = (basic_auth.RESOURCE_TYPE_EXPERIMENT, experiment_id)
    return experiment, [
        basic_auth.Requirement(basic_auth.RESOURCE_TYPE_EXPERIMENT, experiment_id, "read"),
        basic_auth.Requirement(basic_auth.RESOURCE_TYPE_RUN, "*", action, fallback_if_no_grant=(experiment,)),
    ]


class _OncePerRequest:
    """The auth store, except that ``get_user`` reads a user once per request (basic-auth asks twice)."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def get_user(self, username: str):
        if not has_request_context():
            return self._store.get_user(username)
        users = g.setdefault("invaders_users", {})
        if username not in users:
            users[username] = self._store.get_user(username)
        return users[username]


def create_app(app=None):
    """basic-auth's app (``mlflow.server.auth:create_app``) with the two changes above."""
    basic_auth._run_requirement = _run_requirement
    if not isinstance(basic_auth.store, _OncePerRequest):
        basic_auth.store = _OncePerRequest(basic_auth.store)
    return basic_auth.create_app() if app is None else basic_auth.create_app(app)
