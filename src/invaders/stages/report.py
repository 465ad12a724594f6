"""What the report stage does: compare every evaluated agent in the tracking store."""

from __future__ import annotations

import hashlib
from pathlib import Path

from invaders import files
from invaders.config import Params
from invaders.names import Metric
from invaders.pipeline import Step, Workspace
from invaders.tracking.run import Run


def report(params: Params, run: Run, workspace: Workspace) -> str:
    """Read every baseline and evaluation run back from the tracking store and compare them, the agents of
    each seed group of ``shipped/agents.yaml`` in one row."""
    import tempfile

    from invaders.evaluation.publish import default_protocol, protocol_label
    from invaders.reporting.gather import gather_agents
    from invaders.reporting.report import game_title, seed_rows, write_report
    from invaders.shipping import AGENTS_LIST, seed_groups
    from invaders.tracking.mlflow_tracking import download_artifact
    from invaders.tracking.models import describe_scores

    groups = {
        group.label: frozenset(_weights_sha256(workspace.root / AGENTS_LIST.parent / name) for name in group.members)
        for group in seed_groups(workspace.root)
    }
    agents = gather_agents(params.tracking.experiment, protocol_label(params, epsilon=1.0))
    rows = seed_rows(agents, groups)
    protocol = protocol_label(params, params.evaluation.epsilon)
    comparable = [agent for agent in agents if agent.train_steps > 0 and agent.protocol == protocol]
    with files.atomic_directory(workspace.report) as staging:
        best, gif = None, None
        if comparable:
            best = max(comparable, key=lambda agent: agent.scores.mean())
            with tempfile.TemporaryDirectory() as downloads:
                source = download_artifact(best.run_id, "episode.gif", Path(downloads))
                gif = staging / "best_agent.gif"
                gif.write_bytes(source.read_bytes())
        text = write_report(
            rows,
            staging,
            params.report.confidence,
            params.report.bootstrap_samples,
            best,
            gif,
            game=game_title(params.env.id),
        )
    run.log_metrics({Metric.AGENTS_COMPARED: len(rows)})
    randoms = [agent for agent in agents if agent.train_steps == 0 and agent.protocol == agents[0].protocol]
    if protocol == default_protocol():  # version descriptions carry scores under the default protocol only
        describe_scores(params.tracking.experiment, protocol, float(randoms[0].scores.mean()) if randoms else None)
    run.log_artifact(workspace.report, "report")
    print(text)
    return text


def _weights_sha256(agent_dir: Path) -> str:
    """How the evaluation of the agent in ``agent_dir`` is tagged (``Tag.WEIGHTS_SHA256``): one row per agent."""
    return hashlib.sha256((agent_dir / "weights.npz").read_bytes()).hexdigest()


REPORT = Step("report", report)
