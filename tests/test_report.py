"""The report: seeds as one row (IQM, stratified bootstrap CI, a band of curves), the rest one row per agent;
from plain frames, and as the report stage reads them from the evaluation stages' files (its DVC deps)."""

import re

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import yaml
from conftest import REPO
from matplotlib.axes import Axes
from shipped_seeds import SEEDS, shipped_with

from invaders.config import build_params
from invaders.evaluation.statistics import bootstrap_ci
from invaders.names import Metric, Tag
from invaders.pipeline import Workspace
from invaders.reporting.gather import BEST_GAME, EVALUATE, MEDIAN_GAME
from invaders.reporting.report import (
    AgentScores,
    WatchedGames,
    learning_curves_figure,
    plot_learning_curves,
    published_curves_path,
    read_published_curves,
    results_table,
    seed_rows,
    write_report,
)
from invaders.reporting.seeds import curve_band, iqm, stratified_bootstrap_ci
from invaders.steps.report import report
from invaders.tracking.run import RecordingRun
from invaders.tracking.stage_run import StageRun

PROTOCOL = "ALE/SpaceInvaders-v5, eps 0.05"
SEED_SCORES = np.array([318.5, 250.0, 402.3, 120.7, 289.9])  # mean scores of 5 seeds


def test_iqm_is_the_mean_of_the_middle_half_as_scipy_trims_it():
    assert iqm(np.arange(1.0, 9.0)) == 4.5  # 3, 4, 5, 6
    assert iqm([7.0]) == 7.0
    rng = np.random.default_rng(0)
    for size in range(1, 12):
        scores = rng.normal(300.0, 100.0, size)
        assert iqm(scores) == pytest.approx(scipy.stats.trim_mean(scores, 0.25))


@pytest.mark.parametrize(
    ("seeds", "confidence", "expected"),
    [  # rliable 1.2.0: get_interval_estimates({"a": seeds[:, None]}, aggregate_iqm, reps=200_000)
        (SEED_SCORES, 0.95, (163.8, 374.3667)),
        (SEED_SCORES[:3], 0.95, (250.0, 402.3)),
        (SEED_SCORES[:4], 0.95, (120.7, 402.3)),
        (
            np.array([318.5, 250.0, 402.3, 120.7, 289.9, 510.0, 333.3, 205.5, 298.1, 177.0]),
            0.9,
            (226.9333, 345.5),
        ),
    ],
)
def test_stratified_bootstrap_matches_rliable(seeds, confidence, expected):
    assert stratified_bootstrap_ci(seeds, confidence, 200_000) == pytest.approx(expected, abs=0.1)


def test_stratified_bootstrap_of_one_seed_is_the_point_and_repeats_for_a_seed():
    assert stratified_bootstrap_ci(np.array([318.5]), 0.95, 1_000) == (318.5, 318.5)
    assert stratified_bootstrap_ci(SEED_SCORES, 0.9, 2_000, seed=3) == stratified_bootstrap_ci(
        SEED_SCORES, 0.9, 2_000, seed=3
    )
    assert stratified_bootstrap_ci(SEED_SCORES, 0.9, 2_000) == stratified_bootstrap_ci(SEED_SCORES, 0.9, 2_000, seed=0)


def test_curve_band_spans_the_steps_every_seed_reaches_and_fills_gaps_between_logged_steps():
    first = pd.DataFrame({"step": [0, 10, 20, 30], "value": [0.0, 10.0, 20.0, 30.0]})
    second = pd.DataFrame({"step": [10, 40], "value": [30.0, 60.0]})  # nothing logged at 20 and 30
    band = curve_band([first, second], window=1)
    assert band["step"].tolist() == [10, 20, 30]
    assert band["low"].tolist() == [10.0, 20.0, 30.0] and band["high"].tolist() == [30.0, 40.0, 50.0]
    assert band["mean"].tolist() == [20.0, 30.0, 40.0]
    assert curve_band([first], window=2)["mean"].tolist() == [0.0, 5.0, 15.0, 25.0]  # rolling mean of 2 intervals


def agent(label, scores, sha="", steps=100_000, wall=1_500.0, protocol=PROTOCOL, curve=None):
    return AgentScores(
        label=label,
        train_steps=steps,
        train_wall_time_s=wall,
        protocol=protocol,
        experiment="workspace",
        commit="4cfda13aaaa",
        scores=np.array(scores, dtype=float),
        curve=curve,
        weights_sha256=sha,
    )


def curve(level):
    return pd.DataFrame({"step": [1_000, 2_000, 3_000], "value": [level, level + 10.0, level + 20.0]})


@pytest.fixture
def agents():
    """Random, the pipeline's agent, a single-seed 100k agent and a group of 3 seeds, one also evaluated under
    another protocol."""
    return [
        agent("random", [100.0, 200.0], steps=0, wall=0.0),
        agent("native nature-dueling 10,000 steps", [150.0, 170.0], sha="train", steps=10_000, curve=curve(50)),
        agent("native nature-dueling 100,000 steps", [300.0, 340.0], sha="dqn-100k", curve=curve(100)),
        agent("native nature-dueling 100,000 steps", [100.0, 200.0], sha="seed0", wall=1_000.0, curve=curve(80)),
        agent("native nature-dueling 100,000 steps", [300.0, 300.0], sha="seed1", wall=2_000.0, curve=curve(120)),
        agent("native nature-dueling 100,000 steps", [240.0, 260.0], sha="seed2", wall=3_000.0, curve=curve(90)),
        agent("native nature-dueling 100,000 steps", [50.0, 70.0], sha="seed0", protocol="another"),
    ]


GROUPS = {"dqn-100k x3 seeds": frozenset({"seed0", "seed1", "seed2"})}


def test_a_seed_group_is_one_row_per_protocol_where_its_first_seed_stands(agents):
    rows = seed_rows(agents, GROUPS)
    assert [(row.label, len(row.seeds)) for row in rows] == [
        ("random", 1),
        ("native nature-dueling 10,000 steps", 1),
        ("native nature-dueling 100,000 steps", 1),
        ("dqn-100k x3 seeds", 3),
        ("dqn-100k x3 seeds", 1),
    ]
    assert rows[3].scores.tolist() == [100.0, 200.0, 300.0, 300.0, 240.0, 260.0]
    assert rows[4].seeds[0].protocol == "another"
    assert [row.label for row in seed_rows(agents, {})] == [a.label for a in agents]


def test_results_table_gives_a_group_its_iqm_and_stratified_interval_and_a_single_agent_its_mean(agents):
    table = results_table(seed_rows(agents, GROUPS), 0.95, 2_000).set_index("agent", append=True)
    group = table.xs("dqn-100k x3 seeds", level="agent").iloc[0]
    means = np.array([150.0, 300.0, 250.0])
    low, high = stratified_bootstrap_ci(means, 0.95, 2_000)
    assert group["seeds"] == 3 and group["games"] == 6 and group["score"] == f"{iqm(means):.1f}" == "233.3"
    assert group["95% CI"] == f"[{low:.1f}, {high:.1f}]"
    assert group["mean +- std"] == "233.3 +- 69.0" and group["median"] == "250"
    assert group["train time"] == "33.3 min" and group["training steps"] == "100,000"
    assert group["commit"] == "4cfda13" and group["protocol"] == PROTOCOL
    single = table.xs("native nature-dueling 100,000 steps", level="agent").iloc[0]
    low, high = bootstrap_ci(np.array([300.0, 340.0]), 0.95, 2_000)
    assert single["seeds"] == 1 and single["score"] == "320.0" and single["95% CI"] == f"[{low:.1f}, {high:.1f}]"
    assert table.xs("random", level="agent").iloc[0]["seeds"] == 1


def test_learning_curves_draw_a_group_as_its_mean_in_a_band(agents, tmp_path, monkeypatch):
    bands = []
    drawn = Axes.fill_between
    monkeypatch.setattr(
        Axes,
        "fill_between",
        lambda axes, x, low, high, **kw: bands.append((low, high)) or drawn(axes, x, low, high, **kw),
    )
    plot_learning_curves(seed_rows(agents, GROUPS), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert len(bands) == 1  # the group under this protocol; its seed under another has no curve
    low, high = bands[0]
    assert low.tolist() == [80.0, 85.0, 90.0] and high.tolist() == [120.0, 125.0, 130.0]  # rolling mean of 5


def evaluated_curve(steps, returns, evaluations):
    """A curve as the train stage writes it: evaluations (mean, low, high) on some rows, NaN on the others."""
    mean, low, high = (np.full(len(steps), np.nan) for _ in range(3))
    for index, (score, lowest, highest) in evaluations.items():
        mean[index], low[index], high[index] = score, lowest, highest
    columns = {Metric.EVAL_SCORE_MEAN: mean, Metric.EVAL_SCORE_CI_LOW: low, Metric.EVAL_SCORE_CI_HIGH: high}
    return pd.DataFrame({"step": steps, "value": returns, **columns})


def test_learning_curves_show_evaluations_while_training_over_dopamines_curves_as_far_as_ours_reach():
    steps = [250_000, 500_000, 750_000, 1_000_000]
    single = evaluated_curve(steps, [200.0, np.nan, 400.0, 500.0], {1: (300.0, 250.0, 350.0), 3: (600.0, 550.0, 650.0)})
    seeds = [evaluated_curve(steps[:2], [100.0, 150.0], {1: (score, score - 9, score + 9)}) for score in (180.0, 220.0)]
    rows = seed_rows(
        [
            agent("random", [100.0, 200.0], steps=0, wall=0.0),
            agent("1M agent", [500.0], sha="1m", steps=1_000_000, curve=single),
            *(agent("500k", [200.0], sha=f"seed{index}", curve=curve) for index, curve in enumerate(seeds)),
            agent("old agent", [300.0], sha="old", curve=curve(100)),  # trained before evaluations while training
        ],
        {"500k x2 seeds": frozenset({"seed0", "seed1"})},
    )
    published = read_published_curves(published_curves_path(REPO, "ALE/SpaceInvaders-v5"))
    axes = learning_curves_figure(rows, window=1, published=published).axes[0]

    lines = {line.get_label(): line for line in axes.get_lines()}
    for name in ["DQN", "Rainbow", "IQN"]:
        dopamine = lines[f"Dopamine {name} (JAX, Nature CNN)"]
        assert dopamine.get_xdata().tolist() == [250_000, 500_000, 750_000, 1_000_000, 1_250_000]  # one past the edge
    assert lines["Dopamine DQN (JAX, Nature CNN)"].get_ydata()[3] == 415.9  # jaxCNN DQN at 1M (data/anchors)
    assert axes.get_xlim() == (0.0, 1_050_000.0)
    assert lines["1M agent"].get_xdata().tolist() == [250_000, 750_000, 1_000_000]  # no game ended by 500k

    points = {container.get_label(): container for container in axes.containers}
    assert set(points) == {
        "1M agent: evaluation while training (validation games; bars: CI over its games)",
        "500k x2 seeds: evaluation while training (validation games; mean of 2 seeds, bars: lowest to highest)",
    }
    marker, _, (bars,) = points["1M agent: evaluation while training (validation games; bars: CI over its games)"]
    assert marker.get_xdata().tolist() == [500_000, 1_000_000] and marker.get_ydata().tolist() == [300.0, 600.0]
    assert [segment[:, 1].tolist() for segment in bars.get_segments()] == [[250.0, 350.0], [550.0, 650.0]]
    group = points[
        "500k x2 seeds: evaluation while training (validation games; mean of 2 seeds, bars: lowest to highest)"
    ]
    assert group[0].get_ydata().tolist() == [200.0] and group[2][0].get_segments()[0][:, 1].tolist() == [180.0, 220.0]
    assert "not a final evaluation" in axes.get_legend().get_title().get_text()

    short = learning_curves_figure(rows[-1:], published=published).axes[0]  # 3,000 steps: no published point inside
    assert not [line for line in short.get_lines() if "Dopamine" in line.get_label()]
    assert not short.get_legend().get_title().get_text()


def test_report_files_name_the_group_and_how_its_score_is_made(agents, tmp_path):
    text = write_report(seed_rows(agents, GROUPS), tmp_path, 0.95, 500, None, None, game="Space Invaders", source="S.")
    assert "| dqn-100k x3 seeds" in text and "interquartile mean (IQM)" in text and "Agarwal et al. 2021" in text
    assert "dqn-100k x3 seeds" in (tmp_path / "report.html").read_text()
    assert {"learning_curves.png", "score_distributions.png"} <= {path.name for path in tmp_path.iterdir()}


def linked_files(page: str) -> set[str]:
    """What an HTML page loads or links that is not inlined."""
    return {link for link in re.findall(r'(?:src|href|poster)="([^"]+)"', page) if not link.startswith("data:")}


def test_the_best_agents_videos_play_under_its_gif_which_is_their_poster(agents, tmp_path):
    best = agents[2]
    for name, content in [("best_agent.gif", b"GIF89a"), (BEST_GAME, b"best"), (MEDIAN_GAME, b"median")]:
        (tmp_path / name).write_bytes(content)
    games = WatchedGames(best, tmp_path / BEST_GAME, tmp_path / MEDIAN_GAME)
    rows = seed_rows(agents, GROUPS)
    text = write_report(
        rows, tmp_path, 0.95, 100, best, tmp_path / "best_agent.gif", game="G", source="S.", games=games
    )
    page = (tmp_path / "report.html").read_text()
    assert page.count("<video controls") == 2 and "Best and median game" not in page
    assert f'poster="best_agent.gif" style="width:320px;image-rendering:pixelated"><source src="{BEST_GAME}"' in page
    assert '<img alt="best game" src="best_agent.gif"></video>' in page  # without <video>: the GIF
    assert linked_files(page) == {"best_agent.gif", BEST_GAME, MEDIAN_GAME}
    assert "![best agent](best_agent.gif)" in text and f"[best game]({BEST_GAME}), [median game]({MEDIAN_GAME})" in text


def test_the_videos_the_report_shows_are_evaluates_outputs_and_the_reports_deps():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    outs = [next(iter(out)) if isinstance(out, dict) else out for out in stages["evaluate"]["outs"]]
    for name in (BEST_GAME, MEDIAN_GAME):
        video = f"{EVALUATE}/{name}"
        assert video in outs, video
        assert any(video == dep or video.startswith(f"{dep}/") for dep in stages["report"]["deps"]), video


def evaluated(root, folder, label, scores, sha="", steps=100_000, curve_rows=None):
    """An evaluation stage's files in ``root / folder``, written as the stage writes them (``publish_scores``),
    and the agent's training curve beside its weights."""
    from invaders.evaluation.protocol import Episode
    from invaders.evaluation.publish import publish_scores

    episodes = [Episode(score, 500, 2_000, False, seed) for seed, score in enumerate(scores, start=1000)]
    agent = {"agent": label, "train_steps": steps, "train_wall_time_s": 1_500.0 * bool(steps), "weights_sha256": sha}
    epsilon = 0.05 if steps else 1.0
    publish_scores(episodes, root / folder, RecordingRun(), build_params({}), epsilon, agent | PROVENANCE)
    if curve_rows is not None:
        pd.DataFrame(curve_rows, columns=["step", Metric.TRAIN_EPISODE_RETURN]).to_csv(root / curve_rows_at(folder))


PROVENANCE = {"experiment": "workspace", "commit": "4cfda13aaaa"}


def curve_rows_at(folder: str) -> str:
    """Where the agent evaluated in ``folder`` keeps its training curve."""
    return "results/train/curve.csv" if folder == "results/evaluate" else f"shipped/{folder.split('/')[-1]}/curve.csv"


@pytest.fixture
def evaluations(tmp_path, monkeypatch):
    """A repository's evaluation files: random, the pipeline's 10k agent, dqn-100k and a group of 3 seeds."""
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    shipped_with(tmp_path, {"dqn-100k x3 seeds": list(SEEDS)}, SEEDS)
    (tmp_path / "shipped/dqn-100k").mkdir()
    (tmp_path / "results/train").mkdir(parents=True)
    evaluated(tmp_path, "results/baseline", "random", [140.0, 160.0], steps=0)
    evaluated(tmp_path, "results/evaluate", "native nature-dueling 10,000 steps", [150.0, 170.0], "train", 10_000, [])
    evaluated(tmp_path, "results/shipped/dqn-100k", "native nature-dueling 100,000 steps", [300.0, 340.0], "dqn-100k")
    for index, name in enumerate(SEEDS):
        scores, rows = [200.0 + 50 * index, 300.0], [(1_000, 100.0 + index), (2_000, 150.0)]
        evaluated(
            tmp_path, f"results/shipped/{name}", "native nature-dueling 100,000 steps", scores, name, 100_000, rows
        )
    return tmp_path


def written(root) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted((root / "report").iterdir())}


def test_the_report_stage_reads_the_evaluations_its_deps_hold_and_makes_one_row_of_a_seed_group(evaluations):
    text = report(build_params({}), RecordingRun(), Workspace(evaluations))
    rows = [[cell.strip() for cell in line.split("|")[1:3]] for line in text.splitlines() if "| " in line][1:]
    assert rows == [
        ["random", "1"],
        ["native nature-dueling 10,000 steps", "1"],
        ["native nature-dueling 100,000 steps", "1"],
        ["dqn-100k x3 seeds", "3"],
    ]
    assert "results/evaluate, results/shipped/*" in text and "MLflow" not in text


def test_the_report_shows_the_evaluate_stages_videos_from_its_own_folder(evaluations):
    """results/evaluate's best and median game (deps of the report) are copied into report/, where report.html
    plays them (it works opened from there); a shipped agent's videos, declared by no stage, are not read."""
    (evaluations / EVALUATE / BEST_GAME).write_bytes(b"best")
    (evaluations / EVALUATE / MEDIAN_GAME).write_bytes(b"median")
    for folder in (evaluations / "results/shipped").iterdir():  # the best agent's among them
        for name in (BEST_GAME, MEDIAN_GAME):
            (folder / name).write_bytes(b"a shipped agent's, undeclared")
    text = report(build_params({}), RecordingRun(), Workspace(evaluations))
    files = written(evaluations)
    assert files[BEST_GAME] == b"best" and files[MEDIAN_GAME] == b"median"
    page = (evaluations / "report/report.html").read_text()
    assert page.count("<video controls") == 2
    assert "<h2>Best and median game: native nature-dueling 10,000 steps</h2>" in page  # not the best agent's
    assert linked_files(page) == {BEST_GAME, MEDIAN_GAME}
    assert all((evaluations / "report" / name).is_file() for name in linked_files(page))
    assert f"Videos of native nature-dueling 10,000 steps: [best game]({BEST_GAME})" in text


def test_a_report_without_videos_has_no_player(evaluations):
    report(build_params({}), RecordingRun(), Workspace(evaluations))
    assert "<video" not in (evaluations / "report/report.html").read_text()
    assert not {BEST_GAME, MEDIAN_GAME} & set(written(evaluations))


def test_the_report_is_a_function_of_its_deps_not_of_the_tracking_store(evaluations):
    """Another evaluation logged to MLflow leaves the report byte for byte as it was; a changed dep changes it."""
    report(build_params({}), RecordingRun(), Workspace(evaluations))
    before = written(evaluations)
    with StageRun("evaluate", "space-invaders-dqn") as run:  # someone's ad-hoc evaluation, on the same store
        run.set_tags({Tag.AGENT: "native nature-dueling 1,000,000 steps", Tag.TRAIN_RUN_ID: run.run_id})
        run.set_tags({Tag.WEIGHTS_SHA256: "elsewhere", Tag.PROTOCOL: PROTOCOL})
        run.log_metrics({Metric.AGENT_TRAIN_STEPS: 1_000_000, Metric.AGENT_WALL_TIME_S: 9_000.0})
        run.log_metrics({Metric.GAME_SCORE: 900.0}, step=0)
    report(build_params({}), RecordingRun(), Workspace(evaluations))
    assert written(evaluations) == before
    evaluated(
        evaluations, "results/shipped/dqn-100k", "native nature-dueling 100,000 steps", [300.0, 360.0], "dqn-100k"
    )
    text = report(build_params({}), RecordingRun(), Workspace(evaluations))
    assert written(evaluations)["report.md"] != before["report.md"] and "330.0" in text


def test_compare_reads_every_evaluation_in_the_store(tmp_path, monkeypatch):
    """`invaders compare`: the runs in MLflow, not the files, into a folder of its own."""
    from invaders.evaluation.publish import protocol_label
    from invaders.reporting.compare import main

    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped/agents.yaml").write_text("shipped: []\n")
    (tmp_path / "episode.gif").write_bytes(b"GIF89a")
    params = build_params({})
    for label, steps, score, epsilon in [
        ("random", 0, 150.0, 1.0),
        ("native nature 1,000,000 steps", 10**6, 900.0, 0.05),
    ]:
        with StageRun("baseline" if steps == 0 else "evaluate", "space-invaders-dqn") as run:
            run.set_tags({Tag.AGENT: label, Tag.TRAIN_RUN_ID: run.run_id, Tag.WEIGHTS_SHA256: label})
            run.set_tags({Tag.PROTOCOL: protocol_label(params, epsilon)})
            run.log_metrics({Metric.AGENT_TRAIN_STEPS: steps, Metric.AGENT_WALL_TIME_S: 9_000.0})
            run.log_metrics({Metric.GAME_SCORE: score}, step=0)
            run.log_artifact(tmp_path / "episode.gif")
    assert main(["--params", str(REPO / "params.yaml"), "--output", "comparison"]) == 0
    text = (tmp_path / "comparison/report.md").read_text()
    assert "native nature 1,000,000 steps" in text and "MLflow experiment" in text
    assert (tmp_path / "comparison/best_agent.gif").read_bytes() == b"GIF89a"
