"""Stage report: read every baseline and evaluation run back from MLflow and compare them."""

import tempfile
from pathlib import Path

from invaders import files
from invaders.pipeline import protocol_label, run_stage

OUTPUT = Path("report")


def latest(runs, *keys):
    """The newest run of each distinct ``keys`` combination (runs arrive oldest first)."""
    return runs.drop_duplicates(subset=list(keys), keep="last") if not runs.empty else runs


def gather_agents(experiment: str, random_protocol: str):
    """Random agents first, the one under ``random_protocol`` (this run's) leading, then every evaluated agent."""
    from invaders.reporting.report import AgentScores
    from invaders.tracking.mlflow_tracking import metric_history, stage_runs

    agents = []
    baselines = latest(stage_runs(experiment, "baseline"), "tags.invaders.protocol")
    if not baselines.empty:
        baselines = baselines.sort_values(
            "tags.invaders.protocol", key=lambda column: column != random_protocol, kind="stable"
        )
    for _, run in baselines.iterrows():
        agents.append(
            AgentScores(
                label="random",
                train_steps=0,
                train_wall_time_s=0.0,
                protocol=run["tags.invaders.protocol"],
                experiment=run["tags.dvc.exp_name"],
                commit=run["tags.mlflow.source.git.commit"],
                scores=metric_history(run["run_id"], "game_score")["value"].to_numpy(),
            )
        )
    evaluations = latest(stage_runs(experiment, "evaluate"), "tags.invaders.weights_sha256", "tags.invaders.protocol")
    if not evaluations.empty:
        evaluations = evaluations.sort_values("metrics.agent.train_steps", kind="stable")
    for _, run in evaluations.iterrows():
        curve = metric_history(run["tags.invaders.train_run_id"], "train/episode_return")
        agents.append(
            AgentScores(
                label=run["tags.invaders.agent"],
                train_steps=int(run["metrics.agent.train_steps"]),
                train_wall_time_s=float(run["metrics.agent.wall_time_s"]),
                protocol=run["tags.invaders.protocol"],
                experiment=run["tags.dvc.exp_name"],
                commit=run["tags.mlflow.source.git.commit"],
                scores=metric_history(run["run_id"], "game_score")["value"].to_numpy(),
                curve=curve,
                run_id=run["run_id"],
            )
        )
    return agents


def report(params, run) -> None:
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
    run.log_metrics({"agents_compared": len(agents)})
    run.log_artifact(OUTPUT, "report")
    print(text)


if __name__ == "__main__":
    run_stage("report", report)
