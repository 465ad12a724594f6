"""What the report stage does: compare the agents the evaluation stages evaluated, from their files."""

from __future__ import annotations

import shutil

from invaders import files
from invaders.config import Params
from invaders.names import Metric
from invaders.pipeline import Step, Workspace
from invaders.tracking.run import Run

SOURCE = (
    "The agents this pipeline evaluated (results/evaluate, results/shipped/*: the report stage's DVC deps), "
    "beside the random agent (results/baseline)."
)


def report(params: Params, run: Run, workspace: Workspace) -> str:
    """Compare the agents the evaluation stages wrote (the stage's DVC deps, ``gather``), the agents of each
    seed group of ``shipped/agents.yaml`` in one row, beside the random agent."""
    from invaders.evaluation.publish import default_protocol
    from invaders.reporting.gather import SHIPPED_RESULTS, copy_watched_games, gather_evaluations, read_evaluation
    from invaders.reporting.report import (
        game_title,
        published_curves_path,
        read_published_curves,
        seed_rows,
        write_report,
    )
    from invaders.shipping import seed_groups, shipped_agents
    from invaders.tracking.registry import describe_scores

    evaluations = gather_evaluations(workspace.root, shipped_agents(workspace.root))
    random, trained = evaluations[0].agent, evaluations[1:]
    groups = {
        group.label: frozenset(
            read_evaluation(workspace.root / SHIPPED_RESULTS / name).agent.weights_sha256 for name in group.members
        )
        for group in seed_groups(workspace.root)
    }
    rows = seed_rows([evaluation.agent for evaluation in evaluations], groups)
    own = next(e for e in trained if e.folder == workspace.evaluation_results)  # this run's agent
    protocol = own.agent.protocol
    comparable = [evaluation for evaluation in trained if evaluation.agent.protocol == protocol]
    best = max(comparable, key=lambda evaluation: evaluation.agent.scores.mean()) if comparable else None
    with files.atomic_directory(workspace.report) as staging:
        gif = None
        if best is not None and best.gif:
            gif = staging / "best_agent.gif"
            shutil.copyfile(best.gif, gif)
        text = write_report(
            rows,
            staging,
            params.report.confidence,
            params.report.bootstrap_samples,
            best and best.agent,
            gif,
            game=game_title(params.env.id),
            source=SOURCE,
            published=read_published_curves(published_curves_path(workspace.root, params.env.id)),
            games=copy_watched_games(own, staging),  # its videos: a shipped agent's are no dep
        )
    run.log_metrics({Metric.AGENTS_COMPARED: len(rows)})
    if protocol == default_protocol():  # version descriptions carry scores under the default protocol only
        describe_scores(params.tracking.experiment, protocol, float(random.scores.mean()))
    run.log_artifact(workspace.report, "report")
    print(text)
    return text


REPORT = Step("report", report)
