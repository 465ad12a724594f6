"""Stage report: read every baseline and evaluation run back from MLflow and compare them."""

import tempfile
from pathlib import Path

from invaders import io
from invaders.pipeline import run_stage

OUTPUT = Path("report")


def latest(runs, *keys):
    """The newest run of each distinct ``keys`` combination (runs arrive oldest first)."""
    return runs.drop_duplicates(subset=list(keys), keep="last") if not runs.empty else runs


def gather_agents(experiment: str):
    from invaders.reporting.report import AgentScores
    from invaders.tracking.mlflow_tracking import metric_history, stage_runs

    agents = []
    baselines = latest(stage_runs(experiment, "baseline"), "tags.invaders.protocol")
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
    runs = []
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
            )
        )
        runs.append(run["run_id"])
    return agents, runs


def report(params, run) -> None:
    from invaders.reporting.report import write_report
    from invaders.tracking.mlflow_tracking import download_artifact

    agents, evaluation_runs = gather_agents(params.tracking.experiment)
    trained = [agent for agent in agents if agent.train_steps > 0]
    with io.atomic_directory(OUTPUT) as staging:
        best, gif = None, None
        if trained:
            best_index = max(range(len(trained)), key=lambda index: trained[index].scores.mean())
            best, best_run = trained[best_index], evaluation_runs[best_index]
            with tempfile.TemporaryDirectory() as downloads:
                source = download_artifact(best_run, "episode.gif", Path(downloads))
                gif = staging / "best_agent.gif"
                gif.write_bytes(source.read_bytes())
        text = write_report(agents, staging, params.report.confidence, params.report.bootstrap_samples, best, gif)
    run.log_metrics({"agents_compared": len(agents)})
    run.log_artifact(OUTPUT, "report")
    print(text)


if __name__ == "__main__":
    run_stage("report", report)
