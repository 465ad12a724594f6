"""Stage report: read every baseline and evaluation run back from MLflow and compare them."""

import tempfile
from pathlib import Path

from invaders import files
from invaders.evaluation.publish import protocol_label
from invaders.names import Metric
from invaders.pipeline import run_stage

OUTPUT = Path("report")


def report(params, run) -> None:
    from invaders.reporting.gather import gather_agents
    from invaders.reporting.report import game_title, write_report
    from invaders.tracking.mlflow_tracking import download_artifact

    agents = gather_agents(params.tracking.experiment, protocol_label(params, epsilon=1.0))
    protocol = protocol_label(params, params.evaluation.epsilon)
    trained = [agent for agent in agents if agent.train_steps > 0]
    comparable = [agent for agent in trained if agent.protocol == protocol]
    with files.atomic_directory(OUTPUT) as staging:
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
    run.log_artifact(OUTPUT, "report")
    print(text)


if __name__ == "__main__":
    run_stage("report", report)
