"""The team server's users: add, list with their rights, reset a password, remove, change one's own password.

Logins are MLflow basic-auth's; each user's is a 0600 file of ``MLFLOW_TRACKING_*`` variables
(``.server/users/NAME.env``), which ``add``, ``reset`` and ``passwd`` write. The admin's commands log in as
the admin (``.server/secrets.json``) unless given another login file; everything goes through the server's
REST API, so the server decides who may do what (only the admin manages users; anyone changes their own
password with their current one).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import NamedTuple

from invaders.tracking.server import ACCESS, ADMIN, Layout, ServerError, admin_env, read_state, write_private

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
PASSWORD_CHARS = 24  # a generated password's length (token_urlsafe(18)); basic-auth asks for 12 or more


class Login(NamedTuple):
    url: str
    username: str
    password: str


def read_login(path: Path) -> Login:
    """The login in a user's env file (``export MLFLOW_TRACKING_...=...`` lines)."""
    try:
        text = path.read_text()
    except OSError as error:
        raise ServerError(f"--login {path}: cannot read it ({error.strerror})") from None
    values = dict(line.removeprefix("export ").split("=", 1) for line in text.splitlines() if "=" in line)
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    if not all(values.get(key) for key in keys):
        raise ServerError(f"--login {path}: not a login file (needs {', '.join(keys)})")
    return Login(*(values[key] for key in keys))


def admin_login(layout: Layout) -> Login:
    env = admin_env(layout)
    return Login(env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"])


def write_login(path: Path, login: Login) -> Path:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    lines = [f"export MLFLOW_TRACKING_URI={login.url}", f"export MLFLOW_TRACKING_USERNAME={login.username}"]
    write_private(path, "\n".join([*lines, f"export MLFLOW_TRACKING_PASSWORD={login.password}", ""]))
    return path


def api(login: Login, method: str, path: str, what: str, body: dict | None = None, query: dict | None = None):
    """One request to the server's REST API as ``login``; a refusal becomes a one-line ``ServerError``."""
    url = login.url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    credentials = base64.b64encode(f"{login.username}:{login.password}".encode()).decode()
    request.add_header("Authorization", f"Basic {credentials}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        if error.code == 401:
            raise ServerError(f"{what}: login refused for user {login.username!r} (HTTP 401)") from None
        if error.code == 403:
            raise ServerError(
                f"{what}: user {login.username!r} may not do that (HTTP 403): only the admin manages users"
            ) from None
        try:
            message = json.loads(error.read()).get("message", "")
        except ValueError:
            message = ""
        raise ServerError(f"{what}: {message or error.reason} (HTTP {error.code})") from None
    except OSError as error:
        raise ServerError(f"{what}: no MLflow server answers at {login.url} ({error})") from None


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise ServerError(f"NAME={name!r}: a user name is 1-64 letters, digits, '_', '.', '@' or '-'")


def _known(login: Login, name: str) -> dict:
    """User ``name`` as the server has it; one line if there is none."""
    _check_name(name)
    users = {
        user["username"]: user for user in api(login, "GET", "/api/2.0/mlflow/users/list", "listing users")["users"]
    }
    if name not in users:
        raise ServerError(f"NAME={name!r}: no such user (known: {', '.join(sorted(users))})")
    return users[name]


def user_file(layout: Layout, name: str) -> Path:
    return layout.users / f"{name}.env"


def _shared_url(layout: Layout, login: Login) -> str:
    return read_state(layout).get("public_url", login.url)  # what a teammate's machine reaches


def add_user(layout: Layout, name: str, access: str, experiment: str, login: Login | None = None) -> Path:
    """Create user ``name`` (or keep it) with ``access`` on ``experiment`` and on the registered model of the
    same name (it holds the experiment's agents, tracking/registry.py: an EDIT user registers versions and moves
    the champion there too); returns the user's 0600 login file."""
    _check_name(name)
    if access not in ACCESS:
        raise ServerError(f"ACCESS={access!r}: one of {', '.join(ACCESS)}")
    if name == ADMIN:
        raise ServerError(f"NAME={name!r}: that is the admin account (its password is in {layout.secrets})")
    login = login or admin_login(layout)
    what = f"adding user {name!r}"
    users = api(login, "GET", "/api/2.0/mlflow/users/list", what)["users"]
    if name not in {user["username"] for user in users}:
        password = secrets.token_urlsafe(PASSWORD_CHARS * 3 // 4)
        api(login, "POST", "/api/2.0/mlflow/users/create", what, {"username": name, "password": password})
        write_login(user_file(layout, name), Login(_shared_url(layout, login), name, password))
    experiment_id = _experiment_id(login, experiment, what)
    for resource_type, resource_id in (("experiment", experiment_id), ("registered_model", experiment)):
        grant = {"username": name, "resource_type": resource_type, "resource_id": resource_id}
        try:
            api(login, "POST", "/api/3.0/mlflow/users/permissions/grant", what, {**grant, "permission": access})
        except ServerError:  # had one already: replace it
            api(login, "POST", "/api/3.0/mlflow/users/permissions/revoke", what, grant)
            api(login, "POST", "/api/3.0/mlflow/users/permissions/grant", what, {**grant, "permission": access})
    return user_file(layout, name)


def _experiment_id(login: Login, experiment: str, what: str) -> str:
    """The experiment's id, created if new (``tracking.experiment`` may not exist on a new server yet)."""
    try:
        found = api(
            login, "GET", "/api/2.0/mlflow/experiments/get-by-name", what, query={"experiment_name": experiment}
        )
        return found["experiment"]["experiment_id"]
    except ServerError as error:
        if "HTTP 404" not in str(error):
            raise
    from invaders.tracking.store import open_experiment

    os.environ.update(dict(zip(("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"), login[1:])))
    return open_experiment(login.url, experiment)


class UserRights(NamedTuple):
    name: str
    is_admin: bool
    grants: list[str]  # "EDIT on experiment space-invaders-dqn (1)", ...


def list_users(layout: Layout, login: Login | None = None) -> list[UserRights]:
    """Every user with what they were granted (anything else: ``default_permission``, READ)."""
    login = login or admin_login(layout)
    what = "listing users"
    names: dict[str, str] = {}
    listed = []
    for user in sorted(api(login, "GET", "/api/2.0/mlflow/users/list", what)["users"], key=lambda u: u["username"]):
        rows = api(login, "GET", "/api/3.0/mlflow/users/permissions/list", what, query={"username": user["username"]})
        grants = []
        for row in rows["permissions"]:
            resource, pattern = row["resource_type"], row["resource_pattern"]
            if resource == "experiment" and pattern != "*":
                if pattern not in names:
                    found = api(login, "GET", "/api/2.0/mlflow/experiments/get", what, query={"experiment_id": pattern})
                    names[pattern] = found["experiment"]["name"]
                pattern = f"{names[pattern]} ({pattern})"
            grants.append(f"{row['permission']} on {resource.replace('_', ' ')} {pattern}")
        listed.append(UserRights(user["username"], user["is_admin"], sorted(grants)))
    return listed


def reset_password(layout: Layout, name: str, login: Login | None = None) -> Path:
    """Give ``name`` a new password, written to its 0600 login file (the old one stops working)."""
    login = login or admin_login(layout)
    _known(login, name)
    if name == login.username:
        raise ServerError(f"NAME={name!r}: that is your own login: change it with `passwd`")
    password = secrets.token_urlsafe(PASSWORD_CHARS * 3 // 4)
    body = {"username": name, "password": password}
    api(login, "PATCH", "/api/2.0/mlflow/users/update-password", f"resetting {name!r}'s password", body)
    return write_login(user_file(layout, name), Login(_shared_url(layout, login), name, password))


def remove_user(layout: Layout, name: str, login: Login | None = None) -> None:
    """Delete user ``name`` with their grants and their login file."""
    login = login or admin_login(layout)
    if name == ADMIN:
        raise ServerError(f"NAME={name!r}: the admin account cannot be removed")
    _known(login, name)
    api(login, "DELETE", "/api/2.0/mlflow/users/delete", f"removing {name!r}", {"username": name})
    user_file(layout, name).unlink(missing_ok=True)


def change_own_password(path: Path, new_password: str | None = None) -> Path:
    """Change the password of the login in ``path`` with that login itself, and write the new one there."""
    login = read_login(path)
    password = new_password or secrets.token_urlsafe(PASSWORD_CHARS * 3 // 4)
    if len(password) < 12:
        raise ServerError(f"password of {len(password)} characters: basic-auth asks for at least 12")
    body = {"username": login.username, "password": password, "current_password": login.password}
    api(login, "PATCH", "/api/2.0/mlflow/users/update-password", "changing your password", body)
    return write_login(path, login._replace(password=password))
