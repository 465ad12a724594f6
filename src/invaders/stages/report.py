"""What the report stage does: compare every evaluated agent in the tracking store."""

from __future__ import annotations

from pathlib import Path

from invaders import files
from invaders.config import Params
from invaders.names import Metric
from invaders.pipeline import Step, Workspace
from invaders.tracking.run import Run


def report(params: Params, run: Run, workspace: Workspace) -> str:
    """Read every baseline and evaluation run back from the tracking store and compare them."""
    import tempfile

    from invaders.evaluation.publish import protocol_label
    from invaders.reporting.gather import gather_agents
    from invaders.reporting.report import game_title, write_report
    from invaders.tracking.mlflow_tracking import download_artifact

    agents = gather_agents(params.tracking.experiment, protocol_label(params, epsilon=1.0))
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
            agents,
            staging,
            params.report.confidence,
            params.report.bootstrap_samples,
            best,
            gif,
            game=game_title(params.env.id),
        )
    run.log_metrics({Metric.AGENTS_COMPARED: len(agents)})
    run.log_artifact(workspace.report, "report")
    print(text)
    return text


REPORT = Step("report", report)
