"""What the report stage does: compare the agents the evaluation stages evaluated, from their files."""

from __future__ import annotations

import shutil

from invaders import files
from invaders.config import Params
from invaders.names import Metric, Tag
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
    from invaders.reporting.gather import SHIPPED_RESULTS, gather_evaluations, read_evaluation
    from invaders.reporting.report import game_title, seed_rows, write_report
    from invaders.shipping import seed_groups, shipped_agents

    evaluations = gather_evaluations(workspace.root, shipped_agents(workspace.root))
    random, trained = evaluations[0].agent, evaluations[1:]
    groups = {
        group.label: frozenset(
            read_evaluation(workspace.root / SHIPPED_RESULTS / name).agent.weights_sha256 for name in group.members
        )
        for group in seed_groups(workspace.root)
    }
    rows = seed_rows([evaluation.agent for evaluation in evaluations], groups)
    protocol = next(e.agent.protocol for e in trained if e.folder == workspace.evaluation_results)  # this run's
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
        )
    run.log_metrics({Metric.AGENTS_COMPARED: len(rows)})
    if protocol == default_protocol():  # an experiment that changes the protocol never moves the champion
        _crown(params, run, protocol, float(random.scores.mean()))
    run.log_artifact(workspace.report, "report")
    print(text)
    return text


def _crown(params: Params, run: Run, protocol: str, random_mean: float | None) -> None:
    """Describe each registered version's scores beside random's and move ``champion`` on a confident win."""
    from invaders.reporting.champion import Scored, challenger, scores_paragraph, with_scores
    from invaders.tracking.models import champion_version, describe_version, move_champion, version_scores

    name = params.tracking.experiment
    scored = [Scored(**entry) for entry in version_scores(name, protocol)]
    for entry in scored:
        describe_version(
            name, entry.version, lambda text, e=entry: with_scores(text, scores_paragraph(e, protocol, random_mean))
        )
    holder = champion_version(name)
    move = challenger(scored, holder, random_mean)
    if move:
        move_champion(name, move[0].version, move[1])
        run.set_tags({Tag.CHAMPION_MOVES: f"v{holder or '-'} -> v{move[0].version}: {move[1]}"})
        print(f"report: champion -> {name} v{move[0].version}: {move[1]}")
    elif holder:
        print(f"report: champion stays {name} v{holder}")


REPORT = Step("report", report)
