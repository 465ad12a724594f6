"""Agents as MLflow models: logged with a signature, registered as versions of one model, the ``champion``
alias, and agents found again by URI (``models:/space-invaders-dqn@champion``, ``runs:/<id>/agent``).

An agent's model is ``agent_model.py`` (models-from-code) with the agent's folder as artifacts
(``weights.npz``, ``spec.json``, ``agent.json``, the ``params.yaml`` it was trained with), this package
as code and pinned requirements, so ``mlflow.pyfunc.load_model`` and ``mlflow models serve`` need
nothing from this repository. Versions carry tags (``Tag.VERSION_TRAIN_STEPS`` ...) and a description.

The functions that find the store themselves share one client per process and tracking URI, made after the
store answered once (``_client``); those given a run use that run's client.
"""

from __future__ import annotations

import functools
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from invaders.agents.card import AgentCard
from invaders.errors import InputError
from invaders.names import Tag
from invaders.tracking.stage_run import MlflowRun
from invaders.tracking.store import check_store, client_for, displayed, tracking_uri

ARTIFACT = "agent"  # the model's folder inside its run
CHAMPION = "champion"  # alias of the version chosen by paired tests on the validation games (reporting/champion.py)
URI_SCHEMES = ("models:/", "runs:/")
AGENT_MODEL = Path(__file__).with_name("agent_model.py")
PACKAGE = Path(__file__).resolve().parents[1]  # src/invaders: the model's own copy of the code
AGENT_FILES = ("weights.npz", "spec.json", "agent.json", "params.yaml")  # artifacts, if present
REQUIREMENTS = ("mlflow", "tensorflow-cpu", "keras", "numpy", "pyyaml")  # what agent_model.py imports, pinned


def is_model_uri(agent: object) -> bool:
    return str(agent).startswith(URI_SCHEMES)


def mlflow_run(run: Any) -> MlflowRun | None:
    """The MLflow run behind a stage's ``Run`` (inside ``HeldMetrics`` or not); None for other runs."""
    inner = getattr(run, "run", run)
    return inner if isinstance(inner, MlflowRun) else None


def pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in REQUIREMENTS]


def signature(input_shape: tuple[int, ...], num_actions: int):
    """uint8 observations ``(-1, *input_shape)`` in; ``action`` (int64) and ``q_values`` (float32) out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, *input_shape))]),
        outputs=Schema(
            [
                TensorSpec(np.dtype(np.int64), (-1,), "action"),
                TensorSpec(np.dtype(np.float32), (-1, num_actions), "q_values"),
            ]
        ),
    )


def save_agent_model(agent_dir: Path, path: Path, params_file: Path | None = None) -> None:
    """Write the MLflow model of the agent in ``agent_dir`` to the new folder ``path``; ``params_file``
    (the params.yaml it was trained with) goes with it when the folder has none."""
    import mlflow.pyfunc

    from invaders.models.networks import load_spec

    spec = load_spec(agent_dir)
    artifacts = {name.split(".")[0]: str(agent_dir / name) for name in AGENT_FILES if (agent_dir / name).is_file()}
    if "params" not in artifacts and params_file and params_file.is_file():
        artifacts["params"] = str(params_file)
    with warnings.catch_warnings():  # the signature is given: no type hints nor input example needed
        warnings.filterwarnings("ignore", message=".*(type hints|input example).*")
        mlflow.pyfunc.save_model(
            path=str(path),
            python_model=str(AGENT_MODEL),
            artifacts=artifacts,
            code_paths=[str(PACKAGE)],
            pip_requirements=pip_requirements(),
            signature=signature(tuple(spec.input_shape), spec.num_actions),
            metadata={"agent": AgentCard.read(agent_dir).as_dict()},
        )


def log_agent(
    run: MlflowRun, agent_dir: Path, name: str, tags: dict[str, str], description: str, params_file: Path | None = None
) -> str:
    """Log the agent in ``agent_dir`` as the model ``agent`` of ``run`` and register it as a new version
    of ``name``; returns the version. The same weights already registered (a shipped agent evaluated
    again) keep their version, with ``tags`` updated."""
    from mlflow.exceptions import MlflowException

    client = run.client
    stored = client.get_run(run.run_id).data.tags
    tags = {
        Tag.VERSION_COMMIT: stored.get(Tag.GIT_COMMIT, ""),
        Tag.DVC_EXP_NAME: stored.get(Tag.DVC_EXP_NAME, ""),
        **tags,
    }
    existing = find_version(client, name, tags.get(Tag.WEIGHTS_SHA256, ""))
    if existing:
        set_version_tags(client, name, existing, tags)
        return existing
    with tempfile.TemporaryDirectory() as folder:
        save_agent_model(agent_dir, Path(folder) / ARTIFACT, params_file)
        client.log_artifacts(run.run_id, str(Path(folder) / ARTIFACT), ARTIFACT)
    try:
        client.create_registered_model(name, description="Space Invaders agents trained by the invaders pipeline")
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{client.get_run(run.run_id).info.artifact_uri}/{ARTIFACT}"
    version = client.create_model_version(name, source, run_id=run.run_id, description=description)
    set_version_tags(client, name, version.version, tags)
    return str(version.version)


def agent_tags(card: AgentCard, weights_sha256: str) -> dict[str, str]:
    """A version's tags from the agent's card (the commit and DVC experiment come from the run)."""
    tags = {
        Tag.AGENT: card.label,
        Tag.VERSION_TRAIN_STEPS: str(card.train_steps),
        Tag.BACKEND: card.backend,
        Tag.TRAIN_RUN_ID: card.train_run_id,
        Tag.WEIGHTS_SHA256: weights_sha256,
    }
    return {**tags, Tag.VERSION_COMMIT: card.git_commit} if card.git_commit else tags


def register_evaluated(run: Any, agent_dir: Path, name: str, card: AgentCard, weights_sha256: str) -> str | None:
    """The registered version of the agent an evaluation plays (None outside MLflow): a shipped agent
    (its folder has a params.yaml) is logged and registered by the evaluation, once per weights; the
    trained one is the version its train run registered."""
    stored = mlflow_run(run)
    if stored is None:
        return None
    if (agent_dir / "params.yaml").is_file():
        return log_agent(stored, agent_dir, name, agent_tags(card, weights_sha256), describe(card))
    if not stored.client.search_registered_models(f"name = '{name}'"):
        return None
    found = stored.client.search_model_versions(f"name = '{name}' and run_id = '{card.train_run_id}'")
    return str(max(int(version.version) for version in found)) if found else None


def record_scores(name: str, version: str, summary: dict[str, float], protocol: str) -> None:
    """Tag ``version`` with its evaluation: mean, CI, protocol."""
    from invaders.names import Metric

    tags = {
        Tag.SCORE_MEAN: f"{summary[Metric.SCORE_MEAN]:.1f}",
        Tag.SCORE_CI_LOW: f"{summary[Metric.SCORE_CI_LOW]:.1f}",
        Tag.SCORE_CI_HIGH: f"{summary[Metric.SCORE_CI_HIGH]:.1f}",
        Tag.PROTOCOL: protocol,
    }
    set_version_tags(_client(), name, version, tags)


def find_version(client, name: str, weights_sha256: str) -> str | None:
    """The newest version of ``name`` holding these weights, None if there is none."""
    if not weights_sha256 or client.search_registered_models(f"name = '{name}'") == []:
        return None
    found = client.search_model_versions(f"name = '{name}' and tags.`{Tag.WEIGHTS_SHA256}` = '{weights_sha256}'")
    return str(max(int(version.version) for version in found)) if found else None


def set_version_tags(client, name: str, version: str, tags: dict[str, Any]) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def describe(card: AgentCard, extra: str = "") -> str:
    """A version's description: what the agent is and how it was trained (and how it scored, ``extra``)."""
    lines = [
        f"{card.label}: a DQN agent for Space Invaders ({card.network} network, "
        f"{'dueling head' if card.dueling else 'plain head'}), trained by the {card.backend} backend for "
        f"{card.train_steps:,} agent steps ({card.updates:,} gradient updates, {card.wall_time_s / 60:.1f} min).",
        "Input: uint8 stacked frames shaped like the network input; output: the greedy action and the Q-values.",
    ]
    if card.git_commit:
        lines.append(
            f"Trained at commit {card.git_commit[:10]}"
            + (f" in {card.experiment}" if card.experiment else "")
            + (f" with `{card.trained_with}`." if card.trained_with else ".")
        )
    return "\n\n".join([*lines, extra] if extra else lines)


def check_agent_uri(uri: str) -> None:
    """InputError of one line unless ``uri`` names a model in the tracking store."""
    client = _client()
    version, _ = _resolve(client, uri)
    if version is None and not uri.startswith("runs:/"):
        raise InputError(f"--agent {uri}: no such model version in {displayed(tracking_uri())}")


def download_agent(uri: str, destination: Path) -> tuple[Path, str | None]:
    """The agent folder of the model at ``uri``, downloaded into ``destination``, and its registered
    version (None for a ``runs:/`` model not registered)."""
    import mlflow.artifacts

    client = _client()
    version, source = _resolve(client, uri)
    try:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(destination), tracking_uri=tracking_uri()
        )
    except Exception as error:  # noqa: BLE001  MLflow raises several kinds for a missing path
        raise InputError(f"--agent {uri}: cannot download the model ({str(error).splitlines()[0]})") from None
    folder = Path(local) / "artifacts"
    if not (folder / "weights.npz").is_file():
        raise InputError(f"--agent {uri}: not an agent model of this project (no artifacts/weights.npz)")
    return folder, version


def download_curve(uri: str, destination: Path) -> bool:
    """The training curve (``curve.csv``) of the run that trained the agent at ``uri``, if it has one."""
    import shutil

    client = _client()
    version, _ = _resolve(client, uri)
    if version is None:
        return False
    name = uri.removeprefix("models:/").split("@")[0].split("/")[0]
    run_id = client.get_model_version(name, version).tags.get(Tag.TRAIN_RUN_ID, "")
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = client.download_artifacts(run_id, "curve.csv", folder)
        except Exception:  # noqa: BLE001  no such run or file in this store (a shipped agent's run)
            return False
        shutil.copy2(local, destination)
    return True


def version_provenance(uri: str) -> tuple[str, str]:
    """(commit, experiment) of the run that registered the agent at ``uri``: its commit tag, and its DVC
    experiment, or ``sweep NAME trial ID`` when it is the train stage of a sweep trial (its parent run is the
    trial's, whose parent is the sweep's). The commit is "" when the run records none."""
    client = _client()
    version, _ = _resolve(client, uri)
    name = uri.removeprefix("models:/").split("@")[0].split("/")[0]
    run_id = client.get_model_version(name, version).run_id if version else uri.removeprefix("runs:/").split("/")[0]
    tags = client.get_run(run_id).data.tags
    commit = tags.get(Tag.GIT_COMMIT, "")
    experiment = tags.get(Tag.DVC_EXP_NAME, "")
    trial = _parent_tags(client, tags)
    if trial.get(Tag.TRIAL_ID):
        sweep = _parent_tags(client, trial).get(Tag.SWEEP, "?")
        experiment = f"sweep {sweep} trial {trial[Tag.TRIAL_ID]} ({trial.get(Tag.RUN_NAME, '')})"
        commit = commit if commit != "unknown" else trial.get(Tag.GIT_COMMIT, "")
    return ("" if commit == "unknown" else commit), experiment


def _parent_tags(client, tags: dict[str, str]) -> dict[str, str]:
    parent = tags.get(Tag.PARENT_RUN_ID)
    return client.get_run(parent).data.tags if parent else {}


def _client():
    """The MLflow client of the tracking store, checked and made once per process and tracking URI."""
    return _client_of(tracking_uri())


@functools.cache
def _client_of(uri: str):
    check_store(uri)  # a store that does not answer raises, and is not cached
    return client_for(uri)


def _resolve(client, uri: str) -> tuple[str | None, str]:
    """(registered version or None, downloadable source) of a ``models:/`` or ``runs:/`` URI."""
    from mlflow.exceptions import MlflowException

    if not is_model_uri(uri):
        raise InputError(
            f"--agent {uri}: not a model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/agent)"
        )
    if uri.startswith("runs:/"):
        run_id = uri.removeprefix("runs:/").split("/")[0]
        try:
            client.get_run(run_id)
        except MlflowException:
            raise InputError(f"--agent {uri}: no run {run_id} in {displayed(tracking_uri())}") from None
        found = client.search_model_versions(f"run_id = '{run_id}'")
        return (str(found[0].version) if found else None), uri
    name, _, rest = uri.removeprefix("models:/").partition("@")
    try:
        if rest:
            version = client.get_model_version_by_alias(name, rest)
        else:
            name, _, number = name.rpartition("/")
            version = client.get_model_version(name, number)
    except MlflowException:
        raise InputError(
            f"--agent {uri}: no such model version in {displayed(tracking_uri())} (models:/NAME@ALIAS or models:/NAME/VERSION)"
        ) from None
    return str(version.version), f"models:/{version.name}/{version.version}"


def version_scores(name: str, protocol: str) -> list[dict[str, Any]]:
    """Every version of ``name`` scored under ``protocol``: version, mean, CI low and high, label."""
    client = _client()
    if not client.search_registered_models(f"name = '{name}'"):
        return []
    scored = []
    for version in client.search_model_versions(f"name = '{name}'", max_results=10000):
        tags = version.tags
        if tags.get(Tag.PROTOCOL) == protocol and Tag.SCORE_MEAN in tags:
            scored.append(
                {
                    "version": str(version.version),
                    "mean": float(tags[Tag.SCORE_MEAN]),
                    "ci_low": float(tags[Tag.SCORE_CI_LOW]),
                    "ci_high": float(tags[Tag.SCORE_CI_HIGH]),
                    "label": tags.get(Tag.AGENT, ""),
                }
            )
    return scored


def champion_version(name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(_client().get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None


def check_version(name: str, version: str) -> None:
    """InputError of one line unless ``version`` is a registered version of ``name``."""
    from mlflow.exceptions import MlflowException

    try:
        _client().get_model_version(name, str(version))
    except MlflowException:
        raise InputError(f"VERSION = {version}: {name} has no such version in {displayed(tracking_uri())}") from None


def newest_version(name: str) -> str:
    """The highest version number of ``name`` (what the last train stage registered); InputError if none."""
    client = _client()
    found = (
        client.search_model_versions(f"name = '{name}'") if client.search_registered_models(f"name = '{name}'") else []
    )
    if not found:
        raise InputError(f"tracking.experiment = {name!r}: no registered versions in {displayed(tracking_uri())}")
    return str(max(int(version.version) for version in found))


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def champion_moves(name: str) -> list[dict[str, Any]]:
    """The alias's last moves, oldest first: time, from, to, by (``hand`` or ``paired test``) and why."""
    return json.loads(_client().get_registered_model(name).tags.get(Tag.CHAMPION_MOVES, "[]"))


def move_champion(name: str, version: str, reason: str, by: str) -> None:
    """Point ``champion`` at ``version``, ``by`` hand or a paired test, because of ``reason``; the move is
    appended to the model's tag ``Tag.CHAMPION_MOVES`` (the last ``KEPT_MOVES``; a tag holds 5,000
    characters) and the version is tagged with why."""
    client = _client()
    previous = champion_version(name)
    client.set_registered_model_alias(name, CHAMPION, version)
    move = {"time": _now(), "from": previous, "to": version, "by": by, "why": reason}
    moves = [*champion_moves(name), move][-KEPT_MOVES:]
    client.set_registered_model_tag(name, Tag.CHAMPION_MOVES, json.dumps(moves))
    client.set_model_version_tag(name, version, Tag.CHAMPION_SINCE, f"{move['time']} by {by}: {reason}")


KEPT_MOVES = 10


def pin_champion(name: str, reason: str) -> None:
    """Hold the alias where it is: paired tests report but do not move it until ``unpin_champion``."""
    pin = {"time": _now(), "version": champion_version(name), "reason": reason}
    _client().set_registered_model_tag(name, Tag.CHAMPION_PIN, json.dumps(pin))


def unpin_champion(name: str, reason: str) -> None:
    """Let paired tests move the alias again; the unpinning is kept in the moves' history."""
    client = _client()
    if champion_pin(name):
        client.delete_registered_model_tag(name, Tag.CHAMPION_PIN)
    holder = champion_version(name)
    moves = [*champion_moves(name), {"time": _now(), "from": holder, "to": holder, "by": "unpin", "why": reason}]
    client.set_registered_model_tag(name, Tag.CHAMPION_MOVES, json.dumps(moves[-KEPT_MOVES:]))


def champion_pin(name: str) -> dict[str, Any] | None:
    """The pin on the alias (time, version pinned, reason), None if it is not pinned."""
    pin = _client().get_registered_model(name).tags.get(Tag.CHAMPION_PIN)
    return json.loads(pin) if pin else None


def record_challenge(name: str, version: str, outcome: str) -> None:
    """Tag ``version`` with its last paired test against the champion, in words."""
    _client().set_model_version_tag(name, version, Tag.CHAMPION_CHALLENGE, f"{_now()}: {outcome}")


def champion_status(name: str) -> str:
    """The holder, the pin and the recorded moves, one line each."""
    if not _client().search_registered_models(f"name = '{name}'"):
        return f"{name}: no registered model in {displayed(tracking_uri())}"
    holder, pin = champion_version(name), champion_pin(name)
    lines = [f"{name}: champion {'v' + holder if holder else 'none'}"]
    if pin:
        lines.append(f"pinned since {pin['time']}: {pin['reason']}")
    for move in champion_moves(name):
        lines.append(f"{move['time']} v{move['from'] or '-'} -> v{move['to']} by {move.get('by', '?')}: {move['why']}")
    return "\n".join(lines)


SCORES_HEADING = "Scores:"  # the paragraph of a version's description the report rewrites


def describe_scores(name: str, protocol: str, random_mean: float | None) -> None:
    """Write each version's latest scores under ``protocol`` (its tags) into its description, beside random's."""
    client = _client()
    beside = f"; random scores {random_mean:.1f}" if random_mean is not None else ""
    for entry in version_scores(name, protocol):
        paragraph = (
            f"{SCORES_HEADING} mean {entry['mean']:.1f}, CI [{entry['ci_low']:.1f}, {entry['ci_high']:.1f}]{beside} "
            f"(protocol: {protocol})."
        )
        current = client.get_model_version(name, entry["version"]).description or ""
        kept = [part for part in current.split("\n\n") if part and not part.startswith(SCORES_HEADING)]
        client.update_model_version(name, entry["version"], description="\n\n".join([*kept, paragraph]))
