"""``mlflow server --app-name invaders-auth``: MLflow's basic-auth app, with cheaper authorization.

Registered as an ``mlflow.app`` entry point in pyproject.toml (``make setup`` installs it). Every route, login,
grant, rule and answer is basic-auth's own (``mlflow.server.auth``). What changes is what its checks read from
the database before each request (README "Team mode" has the figures):

- A request that names a run (``log_metric``, ``log_batch``, ``set_tag``, ``get_run``...): basic-auth loads
  the whole run (info, params, tags, latest metrics, dataset and model inputs and outputs: 7 queries) only to
  learn its experiment id. A run never changes experiment, so here the id is read with one small query the
  first time and then kept (``RUNS_KEPT`` runs, least recently used out first). Nothing is kept for a run
  that does not exist: it is denied as before, and asked again next time. A deleted run keeps its
  experiment; one that ``mlflow gc`` erased is then refused by the handler (not found) instead.
- The user row and the user's grants, which basic-auth reads on every request (the user twice), are kept
  ``GRANTS_SECONDS`` per worker while requests are authorized; a refusal is decided again from the
  database. The price: a grant revoked or lowered, or an admin demoted, still works for up to that many
  seconds in each worker. A new right counts at once (the creator's rights on an experiment or model just
  created, a grant just given, a new admin). Logins are basic-auth's own cache (``auth_cache_ttl_seconds``);
  the user-admin routes and the filtering of listings read the database as before.

With MLflow's workspaces on (``MLFLOW_ENABLE_WORKSPACES``) or a tracking store that is not SQL, runs are
looked up as basic-auth does.
"""

from __future__ import annotations

import contextvars
import fcntl
import threading
from importlib.metadata import version

from invaders.tracking.server import unverified_auth_app

# It replaces private functions of basic-auth: under an MLflow it was not verified on, it refuses to load
# (before anything is replaced), and `make server` says so in one line first (server.check_app).
_UNVERIFIED = unverified_auth_app(version("mlflow"))
if _UNVERIFIED:
    raise ImportError(_UNVERIFIED)

from cachetools import LRUCache, TTLCache  # noqa: E402
from mlflow.server import auth as basic_auth  # noqa: E402
from mlflow.server.auth.config import _get_auth_config_path  # noqa: E402

RUNS_KEPT = 100_000  # a run id and an experiment id: ~10 MB at most per worker
GRANTS_SECONDS = 10

_lock = threading.Lock()  # cachetools' caches are not thread-safe (in case of threaded workers)
_experiment_of_run: LRUCache[str, str] = LRUCache(maxsize=RUNS_KEPT)
_grants: TTLCache[tuple, object] = TTLCache(maxsize=10_000, ttl=GRANTS_SECONDS)
# None: read the store; "use": answer from what is kept; "refresh": read the store and keep the answers
_authorizing: contextvars.ContextVar[str | None] = contextvars.ContextVar("invaders_authorizing", default=None)
_original_run_requirement = basic_auth._run_requirement
_original_before_request = basic_auth._before_request


def _run_experiment_id(run_id: str) -> str | None:
    """The run's experiment id (None: no such run), kept or read with one small query."""
    with _lock:
        found = _experiment_of_run.get(run_id)
    if found is not None:
        return found
    from mlflow.store.tracking.dbmodels.models import SqlRun

    with basic_auth._get_tracking_store().ManagedSessionMaker() as session:
        row = session.query(SqlRun.experiment_id).filter(SqlRun.run_uuid == run_id).one_or_none()
    if row is None:
        return None
    with _lock:
        _experiment_of_run[run_id] = str(row[0])
    return str(row[0])


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


class _KeptWhileAuthorizing:
    """basic-auth's user store, whose ``get_user`` and ``list_grants`` answers are kept ``GRANTS_SECONDS``
    while a request is authorized (``_before_request``), and read afresh everywhere else."""

    def __init__(self, store):
        self._store = store

    def __getattr__(self, name):
        return getattr(self._store, name)

    def _kept(self, key: tuple, read):
        mode = _authorizing.get()
        if mode is None:
            return read()
        with _lock:
            found = _grants.get(key) if mode == "use" else None
        if found is None:
            found = read()  # an unknown user raises: nothing is kept for it
            with _lock:
                _grants[key] = found
        return found

    def get_user(self, username: str):
        return self._kept(("user", username), lambda: self._store.get_user(username))

    def list_grants(self, user_id: int, workspace: str, resource_types):
        key = ("grants", user_id, workspace, frozenset(resource_types))
        return self._kept(key, lambda: self._store.list_grants(user_id, workspace, resource_types))


def _before_request():
    """basic-auth's login and authorization of every request, from kept answers; a refusal is decided again
    from the database, so what was kept may let a revoked right through for a while, never block a new one
    (an experiment or model just created by its owner, a grant just given)."""
    token = _authorizing.set("use")
    try:
        response = _original_before_request()
        if response is not None and response.status_code == 403:
            _authorizing.set("refresh")
            response = _original_before_request()
        return response
    finally:
        _authorizing.reset(token)


def create_app(app=None):
    """basic-auth's app (``mlflow.server.auth:create_app``) with the changes above."""
    basic_auth._run_requirement = _run_requirement
    basic_auth._before_request = _before_request  # create_app registers it by this name
    if not isinstance(basic_auth.store, _KeptWhileAuthorizing):
        basic_auth.store = _KeptWhileAuthorizing(basic_auth.store)
    # `mlflow server` creates basic-auth's tables and admin once, before it starts the workers, only for the
    # app named "basic-auth"; for any other name each worker does it in create_app, and two workers creating
    # the tables of a new database at once crash one another (the server then stops). One at a time, here.
    # The lock is basic-auth's config file (the server's own auth.ini), which every worker reads anyway.
    with open(_get_auth_config_path()) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        return basic_auth.create_app() if app is None else basic_auth.create_app(app)
