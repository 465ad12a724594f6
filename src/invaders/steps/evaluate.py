"""What the evaluate stages do: an agent (the trained one, or a shipped one) plays the evaluation protocol."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

from invaders.agents.card import AgentCard
from invaders.config import ConfigError, Params, as_flat_dict, load_params
from invaders.evaluation.publish import default_protocol, protocol_label, protocol_params, publish_scores, score_line
from invaders.names import Metric, Tag
from invaders.pipeline import Step, Workspace
from invaders.repository import provenance
from invaders.shipping import RECORDED, WEIGHTS_SHA256
from invaders.tracking.run import Run

SHIPPED_CURVE = "curve.csv"  # a shipped agent's training curve, beside its weights
# A shipped agent whose weights are too big for git (invaders.shipping.GIT_FILE_LIMIT) has no weights.npz in
# its folder but the evaluation it played where it was trained, under its own params.yaml's protocol, and
# the SHA-256 of its weights (kept outside git, for DVC), which the report's rows go by.
RECORDED_EPISODES, RECORDED_GIF = (name for _, name in RECORDED)


def evaluate(
    params: Params, run: Run, workspace: Workspace, agent_dir: Path | str | None = None, output: Path | None = None
) -> dict[str, float]:
    """An agent (the trained one, a shipped one in ``agent_dir``, or an MLflow model URI such as
    ``models:/space-invaders-dqn@champion``) plays the evaluation protocol.

    A shipped agent plays the game it was trained on (its own params.yaml); the evaluation settings are
    this run's. Its training curve is logged with the evaluation, its training run being in another store.
    """
    from invaders.tracking.registry import download_agent, is_model_uri

    if is_model_uri(agent_dir):
        with tempfile.TemporaryDirectory() as folder:
            downloaded, version = download_agent(str(agent_dir), Path(folder))
            return _evaluate(params, run, workspace, downloaded, output, version, str(agent_dir))
    return _evaluate(params, run, workspace, agent_dir, output)


def _evaluate(
    params: Params,
    run: Run,
    workspace: Workspace,
    agent_dir: Path | None,
    output: Path | None,
    version: str | None = None,
    uri: str = "",
) -> dict[str, float]:
    from invaders.agents.policy import GreedyPolicy, play_evaluation
    from invaders.envs.atari import make_vector_env, num_actions, observation_shape
    from invaders.evaluation.recording import ActionRecorder
    from invaders.models.networks import check_fits, load_model
    from invaders.reporting.animation import write_watched_games
    from invaders.tracking.registry import record_scores, register_evaluated
    from invaders.tracking.run_names import run_name, short_steps

    agent_dir = agent_dir or workspace.trained
    output = output or workspace.evaluation_results
    if not (agent_dir / "weights.npz").is_file() and (agent_dir / RECORDED_EPISODES).is_file():
        return _publish_recorded(params, run, agent_dir, output)
    evaluation = params.evaluation
    agent = AgentCard.read(agent_dir)
    model, spec = load_model(agent_dir, precision=agent.precision or "float32")
    trained_with = params
    if (agent_dir / "params.yaml").is_file():
        try:
            trained_with = load_params(agent_dir / "params.yaml")
        except ConfigError as error:
            message = str(error)  # say which params file: not the project's own
            where = "" if message.startswith(str(agent_dir)) else f"{agent_dir}/params.yaml: "
            raise ConfigError(where + message) from None
        params = dataclasses.replace(params, env=trained_with.env)
    check_fits(spec, agent_dir, observation_shape(params.env), num_actions(params.env))
    weights_sha = hashlib.sha256((agent_dir / "weights.npz").read_bytes()).hexdigest()
    training = {**as_flat_dict(trained_with.train.applied(), "train"), **as_flat_dict(trained_with.model, "model")}
    run.log_params(
        {**protocol_params(params), "evaluation.epsilon": evaluation.epsilon, **agent.as_params(), **training}
    )
    run.set_tags({Tag.AGENT: agent.label, Tag.TRAIN_RUN_ID: agent.train_run_id, Tag.WEIGHTS_SHA256: weights_sha})
    what = uri or (
        agent_dir.name
        if agent_dir != workspace.trained
        else f"{short_steps(agent.train_steps)} seed {trained_with.train.seed}"
    )
    run.set_tags({Tag.RUN_NAME: run_name(f"evaluate {what}")})
    version = version or register_evaluated(run, agent_dir, params.tracking.experiment, agent, weights_sha)
    if (agent_dir / SHIPPED_CURVE).is_file():
        _log_shipped_curve(agent_dir / SHIPPED_CURVE, run)
    recorder = ActionRecorder(make_vector_env(params.env, min(evaluation.num_envs, evaluation.episodes)))
    episodes = play_evaluation(GreedyPolicy(model), params.env, evaluation, evaluation.split, env=recorder)
    summary = publish_scores(episodes, output, run, params, evaluation.epsilon, _evaluated(agent, weights_sha))
    run.log_metrics({Metric.AGENT_TRAIN_STEPS: agent.train_steps, Metric.AGENT_WALL_TIME_S: agent.wall_time_s})
    if version:
        run.set_tags({Tag.MODEL_VERSION: version})
        protocol = protocol_label(params, evaluation.epsilon)
        if protocol == default_protocol():  # a version's score tags are always under the default protocol
            record_scores(params.tracking.experiment, version, summary, protocol)
    began = time.monotonic()
    watched = write_watched_games(params.env, recorder, episodes, evaluation.gif_max_frames, output)
    for path in watched:
        run.log_artifact(path)
    sizes = ", ".join(f"{path.name} {path.stat().st_size / 1e6:.1f} MB" for path in watched)
    print(f"evaluate: {sizes} in {time.monotonic() - began:.0f} s")
    print(score_line(agent.label, summary))
    return summary


def _publish_recorded(params: Params, run: Run, agent_dir: Path, output: Path) -> dict[str, float]:
    """Publish the evaluation a shipped agent without weights in git brought along (``RECORDED_EPISODES``):
    its games, under the protocol of its own params.yaml (game and evaluation settings), not this run's."""
    import pandas as pd

    from invaders.evaluation.protocol import Episode
    from invaders.tracking.run_names import run_name

    agent = AgentCard.read(agent_dir)
    try:
        trained_with = load_params(agent_dir / "params.yaml")
    except (ConfigError, OSError) as error:
        raise ConfigError(f"{agent_dir}/params.yaml: {error}") from None
    recorded = dataclasses.replace(params, env=trained_with.env, evaluation=trained_with.evaluation)
    table = pd.read_csv(agent_dir / RECORDED_EPISODES)
    episodes = [
        Episode(
            float(row.game_score), int(row.steps), int(row.frames), bool(row.truncated), int(getattr(row, "seed", -1))
        )
        for row in table.itertuples()
    ]
    if len(episodes) != recorded.evaluation.episodes:
        raise ConfigError(
            f"{agent_dir / RECORDED_EPISODES}: {len(episodes)} games, its params.yaml says "
            f"evaluation.episodes = {recorded.evaluation.episodes}"
        )
    epsilon = recorded.evaluation.epsilon
    weights_sha = (agent_dir / WEIGHTS_SHA256).read_text().split()[0]
    training = {**as_flat_dict(trained_with.train.applied(), "train"), **as_flat_dict(trained_with.model, "model")}
    run.log_params({**protocol_params(recorded), "evaluation.epsilon": epsilon, **agent.as_params(), **training})
    run.set_tags(
        {
            Tag.AGENT: agent.label,
            Tag.TRAIN_RUN_ID: agent.train_run_id,
            Tag.WEIGHTS_SHA256: weights_sha,
            Tag.RECORDED: "true",
            Tag.RUN_NAME: run_name(f"evaluate {agent_dir.name} (recorded)"),
        }
    )
    if (agent_dir / SHIPPED_CURVE).is_file():
        _log_shipped_curve(agent_dir / SHIPPED_CURVE, run)
    summary = publish_scores(episodes, output, run, recorded, epsilon, _evaluated(agent, weights_sha))
    run.log_metrics({Metric.AGENT_TRAIN_STEPS: agent.train_steps, Metric.AGENT_WALL_TIME_S: agent.wall_time_s})
    if (agent_dir / RECORDED_GIF).is_file():
        shutil.copyfile(agent_dir / RECORDED_GIF, output / "episode.gif")
        run.log_artifact(output / "episode.gif")
    print(score_line(f"{agent.label} (recorded: {protocol_label(recorded, epsilon)})", summary))
    return summary


def _evaluated(agent: AgentCard, weights_sha256: str) -> dict[str, object]:
    """The agent as the report's row names it (``evaluated.json``, beside the scores)."""
    return {
        "agent": agent.label,
        "train_steps": agent.train_steps,
        "train_wall_time_s": agent.wall_time_s,
        "weights_sha256": weights_sha256,
        **provenance(),
    }


def _log_shipped_curve(path: Path, run: Run) -> None:
    import pandas as pd

    curve = pd.read_csv(path).dropna(subset=[Metric.TRAIN_EPISODE_RETURN])
    for step, score in zip(curve["step"], curve[Metric.TRAIN_EPISODE_RETURN]):
        run.log_metrics({Metric.TRAIN_EPISODE_RETURN: float(score)}, step=int(step))
    run.set_tags({Tag.TRAIN_RUN_ID: run.run_id, Tag.SHIPPED: "true"})
    run.log_artifact(path)


EVALUATE = Step("evaluate", evaluate)


def evaluate_shipped(agent_dir: Path | str, output: Path) -> Step:
    """The evaluate step for an agent shipped in ``agent_dir`` (or a model URI), writing into ``output``."""
    return Step("evaluate", functools.partial(evaluate, agent_dir=agent_dir, output=output))


def evaluate_step(agent: str | None, output: Path | None) -> Step:
    """The evaluate step of the command line: the trained agent without ``agent``, else a shipped agent's
    folder or a model URI, whose model must exist (checked here, before any work)."""
    from invaders.tracking.registry import check_agent_uri, is_model_uri

    if not agent:
        return EVALUATE
    if is_model_uri(agent):
        check_agent_uri(agent)
        return evaluate_shipped(agent, output)
    return evaluate_shipped(Path(agent), output)
