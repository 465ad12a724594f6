"""The comparison report: every evaluated agent beside the random one.

Input is plain pandas frames (one row per agent, the per-game scores, the learning curves) so the
report can be built and tested without a tracking store; ``gather.gather_evaluations`` reads them from the
evaluation stages' files (the report stage), ``compare.gather_runs`` from every run in MLflow (the command).
A row is one agent, or the agents of one seed group (``seed_rows``): one setting trained with several seeds.
The learning curves are drawn over Dopamine's published curves of the game where ``data/anchors/`` has them.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import EngFormatter  # noqa: E402

from invaders.config import rom_name  # noqa: E402
from invaders.evaluation.statistics import bootstrap_ci, summarize  # noqa: E402
from invaders.names import Metric  # noqa: E402
from invaders.reporting.seeds import curve_band, iqm, stratified_bootstrap_ci  # noqa: E402


@dataclass
class AgentScores:
    """One evaluated agent (or the random one) and what it scored."""

    label: str
    train_steps: int  # 0 for the random agent
    train_wall_time_s: float  # 0 for the random agent
    protocol: str
    experiment: str  # DVC experiment that produced the evaluation
    commit: str
    scores: np.ndarray  # unclipped game score of each evaluation game
    # Per log interval (rows by step): ``value``, the mean training game score (NaN if no game ended), and for
    # an agent evaluated while training Metric.EVAL_SCORE_MEAN, _CI_LOW, _CI_HIGH (NaN between evaluations).
    curve: pd.DataFrame | None = None
    run_id: str = ""  # the MLflow run of the evaluation, which holds its GIF ("" when read from files)
    weights_sha256: str = ""  # of the evaluated weights.npz (Tag.WEIGHTS_SHA256); "" for the random agent


@dataclass(frozen=True)
class WatchedGames:
    """One agent's best and its median evaluation game as the evaluate stage's videos, in the report's folder."""

    agent: AgentScores
    best: Path
    median: Path


@dataclass
class Row:
    """One row of the report: an agent, or the agents of a seed group (one per training seed)."""

    label: str
    seeds: list[AgentScores]

    @property
    def scores(self) -> np.ndarray:
        """Every evaluation game of the row."""
        return np.concatenate([agent.scores for agent in self.seeds])


def seed_rows(agents: list[AgentScores], groups: dict[str, frozenset[str]]) -> list[Row]:
    """A row per agent, but the agents of a seed group (``groups``: row label -> its members' weights SHA-256)
    make one row per protocol, where the first of them stands."""
    group_of = {sha: label for label, shas in groups.items() for sha in shas}
    rows, grouped = [], {}
    for agent in agents:
        label = group_of.get(agent.weights_sha256)
        if label is None:
            rows.append(Row(agent.label, [agent]))
            continue
        if (label, agent.protocol) not in grouped:
            grouped[label, agent.protocol] = Row(label, [])
            rows.append(grouped[label, agent.protocol])
        grouped[label, agent.protocol].seeds.append(agent)
    return rows


def game_title(env_id: str) -> str:
    """The game's name for titles: ``ALE/SpaceInvaders-v5`` -> ``Space Invaders``."""
    return rom_name(env_id).replace("_", " ").title()


# Under the table: what the score and CI columns are, for one seed and for several.
SCORE_NOTE = (
    "score: the mean game score and a bootstrap CI over the games; for several seeds, the interquartile mean (IQM) "
    "of the seeds' mean scores and a stratified bootstrap CI over the seeds (Agarwal et al. 2021, rliable's method). "
    "mean +- std, median and games: all the row's games; train time: per seed."
)


def results_table(rows: list[Row], confidence: float, samples: int) -> pd.DataFrame:
    """The score of a row of one seed is its mean game score, with a bootstrap CI over its games; of a row
    of several, the IQM of the seeds' mean scores, with a stratified bootstrap CI over its seeds."""
    table = []
    for row in rows:
        stats = summarize(row.scores)
        if len(row.seeds) == 1:
            score, (low, high) = stats["mean"], bootstrap_ci(row.scores, confidence, samples)
        else:
            means = np.array([agent.scores.mean() for agent in row.seeds])
            score, (low, high) = iqm(means), stratified_bootstrap_ci(means, confidence, samples)
        table.append(
            {
                "agent": row.label,
                "seeds": len(row.seeds),
                "training steps": _distinct(f"{agent.train_steps:,}" for agent in row.seeds),
                "train time": _duration(float(np.mean([agent.train_wall_time_s for agent in row.seeds]))),
                "score": f"{score:.1f}",
                f"{confidence:.0%} CI": f"[{low:.1f}, {high:.1f}]",
                "mean +- std": f"{stats['mean']:.1f} +- {stats['std']:.1f}",
                "median": f"{stats['median']:.0f}",
                "games": stats["episodes"],
                "experiment": _distinct(agent.experiment for agent in row.seeds),
                "commit": _distinct(agent.commit[:7] for agent in row.seeds),
                "protocol": row.seeds[0].protocol,
            }
        )
    return pd.DataFrame(table)


def _distinct(values: Iterable[str]) -> str:
    """The different values, in order of first appearance: the seeds of a row usually share them."""
    return ", ".join(dict.fromkeys(values))


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


# Dopamine's curves drawn under this project's (data/anchors/README.md): (set, agent) -> legend name.
PUBLISHED_AGENTS = {("jaxCNN", "DQN"): "DQN", ("jaxCNN", "Rainbow"): "Rainbow", ("jaxCNN", "IQN"): "IQN"}
# The legend's title when Dopamine's curves are drawn: how their numbers were measured.
PUBLISHED_NOTE = (
    "dotted: Dopamine's published curves, mean training return of 5 seeds per 250k-step iteration (band: lowest\n"
    "to highest seed), at the training epsilon under sticky actions: training returns, not a final evaluation"
)
EVALUATION_COLUMNS = [Metric.EVAL_SCORE_MEAN, Metric.EVAL_SCORE_CI_LOW, Metric.EVAL_SCORE_CI_HIGH]
X_MARGIN = 0.05  # of the steps this project's curves reach: how far the axis (and the published curves) go past


def published_curves_path(root: Path, env_id: str) -> Path:
    """Where Dopamine's curves of the game are kept (``ALE/SpaceInvaders-v5``: ``dopamine-spaceinvaders.csv``)."""
    return root / "data" / "anchors" / f"dopamine-{rom_name(env_id).replace('_', '')}.csv"


def read_published_curves(path: Path) -> pd.DataFrame | None:
    """The published curves in ``path`` (columns of data/anchors/README.md), None for a game without them."""
    return pd.read_csv(path) if path.exists() else None


def _training_curve(agent: AgentScores) -> pd.DataFrame | None:
    if agent.curve is None:
        return None
    curve = agent.curve[["step", "value"]].dropna()
    return None if curve.empty else curve


def _evaluations(agent: AgentScores) -> pd.DataFrame | None:
    """The agent's evaluations while training (step and the EVALUATION_COLUMNS), None if it had none."""
    if agent.curve is None or Metric.EVAL_SCORE_MEAN not in agent.curve:
        return None
    points = agent.curve.reindex(columns=["step", *EVALUATION_COLUMNS]).dropna(subset=[Metric.EVAL_SCORE_MEAN])
    return None if points.empty else points


def _row_evaluations(row: Row) -> tuple[pd.DataFrame, str] | None:
    """A row's evaluation points (columns step, mean, low, high) and what their bars are: one agent's CI, or
    for several seeds (if every one was evaluated) the mean of the seeds' scores at the steps all of them were
    evaluated at, bars from the lowest to the highest seed."""
    seeds = [points for agent in row.seeds if (points := _evaluations(agent)) is not None]
    if not seeds:
        return None
    if len(row.seeds) == 1:
        mean, low, high = (seeds[0][column].to_numpy() for column in EVALUATION_COLUMNS)
        # a missing interval end draws no bar on that side
        points = {"step": seeds[0]["step"], "mean": mean, "low": np.fmin(low, mean), "high": np.fmax(high, mean)}
        return pd.DataFrame(points), "bars: CI over its games"
    if len(seeds) < len(row.seeds):
        return None
    means = pd.concat([points.set_index("step")[Metric.EVAL_SCORE_MEAN] for points in seeds], axis=1, join="inner")
    if means.empty:
        return None
    points = {"step": means.index, "mean": means.mean(axis=1), "low": means.min(axis=1), "high": means.max(axis=1)}
    return pd.DataFrame(points).reset_index(drop=True), f"mean of {len(seeds)} seeds, bars: lowest to highest"


def _draw_published(axes, published: pd.DataFrame, x_max: float) -> bool:
    """Dopamine's curves up to ``x_max`` (and their next point, so a line runs to the axis' edge); False if
    none of their points falls inside."""
    drawn = False
    for (curve_set, agent), name in PUBLISHED_AGENTS.items():
        curve = published[(published["set"] == curve_set) & (published["agent"] == agent)]
        curve = curve.sort_values("agent_steps_end")
        inside = int((curve["agent_steps_end"] <= x_max).sum())
        if inside == 0:
            continue
        curve = curve.iloc[: inside + 1]
        (line,) = axes.plot(
            curve["agent_steps_end"],
            curve["mean"],
            linestyle=":",
            marker=".",
            linewidth=1.2,
            zorder=1,
            label=f"Dopamine {name} (JAX, Nature CNN)",
        )
        axes.fill_between(
            curve["agent_steps_end"], curve["min_seed"], curve["max_seed"], color=line.get_color(), alpha=0.1, zorder=1
        )
        drawn = True
    return drawn


def learning_curves_figure(rows: list[Row], window: int = 5, published: pd.DataFrame | None = None):
    """A line per agent; a row of several seeds is their mean in a band from the lowest to the highest seed.
    Beside a line, its agent's evaluations while training (points with bars); under the lines, Dopamine's
    ``published`` curves, as far as this project's curves reach."""
    figure, axes = plt.subplots(figsize=(8, 6))
    random_mean = next((r.scores.mean() for r in rows if r.seeds[0].train_steps == 0), None)  # the first: this protocol
    reach = 0.0
    for row in rows:
        curves = [curve for agent in row.seeds if (curve := _training_curve(agent)) is not None]
        color = None
        if len(curves) == 1 and len(row.seeds) == 1:
            smooth = curves[0]["value"].rolling(window, min_periods=1).mean()
            (line,) = axes.plot(curves[0]["step"], smooth, label=row.label, zorder=3)
            color, reach = line.get_color(), max(reach, float(curves[0]["step"].max()))
        elif curves:
            band = curve_band(curves, window)
            (line,) = axes.plot(
                band["step"],
                band["mean"],
                label=f"{row.label} (mean, band: lowest to highest of {len(curves)} seeds)",
                zorder=3,
            )
            axes.fill_between(band["step"], band["low"], band["high"], color=line.get_color(), alpha=0.2, zorder=2)
            color, reach = line.get_color(), max(reach, float(band["step"].max()))
        evaluations = _row_evaluations(row)
        if evaluations is not None:
            points, bars = evaluations
            axes.errorbar(
                points["step"],
                points["mean"],
                yerr=[points["mean"] - points["low"], points["high"] - points["mean"]],
                fmt="o",
                markersize=4,
                capsize=3,
                color=color,
                zorder=4,
                label=f"{row.label}: evaluation while training (validation games; {bars})",
            )
            reach = max(reach, float(points["step"].max()))
    x_max = reach * (1 + X_MARGIN)
    with_published = published is not None and reach > 0 and _draw_published(axes, published, x_max)
    if reach > 0:
        axes.set_xlim(0, x_max)
    if random_mean is not None:
        axes.axhline(random_mean, color="grey", linestyle="--", label="random agent (evaluation mean)")
    axes.set_xlabel("agent steps")
    axes.xaxis.set_major_formatter(EngFormatter(sep=""))  # 250k, 1M
    axes.set_ylabel(f"game score\n(training: rolling mean of {window} log intervals)")
    axes.set_title("Learning curves")
    if axes.get_legend_handles_labels()[0]:  # under the axes: the curves fill them
        axes.legend(
            fontsize=7,
            title=PUBLISHED_NOTE if with_published else None,
            title_fontsize=7,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
        )
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def plot_learning_curves(rows: list[Row], path: Path, window: int = 5, published: pd.DataFrame | None = None) -> None:
    """``learning_curves_figure`` as a PNG in ``path``."""
    figure = learning_curves_figure(rows, window, published)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def plot_score_distributions(rows: list[Row], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 0.6 * len(rows) + 1.8))
    axes.boxplot([r.scores for r in rows], vert=False, showmeans=True)
    for number, row in enumerate(rows, start=1):
        jitter = np.random.default_rng(number).uniform(-0.15, 0.15, row.scores.size)
        axes.scatter(row.scores, number + jitter, s=8, alpha=0.5)
    labels = [r.label if len(r.seeds) == 1 else f"{r.label} (games of {len(r.seeds)} seeds)" for r in rows]
    axes.set_yticks(range(1, len(rows) + 1), labels, fontsize=8)
    axes.set_xlabel("game score (evaluation games)")
    axes.set_title("Score distributions")
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(
    rows: list[Row],
    directory: Path,
    confidence: float,
    samples: int,
    best: AgentScores | None,
    gif: Path | None,
    *,
    game: str,
    source: str,
    published: pd.DataFrame | None = None,
    games: WatchedGames | None = None,
) -> str:
    """Write report.md, report.html and the plots into ``directory``, titled for ``game``, saying under the
    title which evaluations it compares (``source``), the learning curves over Dopamine's ``published`` curves
    of the game if given, the ``best`` agent's ``gif`` and an agent's watched ``games`` (videos in
    ``directory``, which the page links); return the Markdown."""
    table = results_table(rows, confidence, samples)
    plot_learning_curves(rows, directory / "learning_curves.png", published=published)
    plot_score_distributions(rows, directory / "score_distributions.png")
    markdown = [
        f"# {game} DQN: results",
        "",
        source,
        "Scores are unclipped game scores of whole games under the protocol shown.",
        "",
        table.to_markdown(index=False),
        "",
        SCORE_NOTE,
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![score distributions](score_distributions.png)",
    ]
    if gif is not None:
        markdown += ["", f"Best agent playing ({best.label}):", "", f"![best agent]({gif.name})"]
    if games is not None:
        videos = f"[best game]({games.best.name}), [median game]({games.median.name})"
        markdown += ["", f"Videos of {games.agent.label}: {videos} (report.html shows them)."]
    text = "\n".join(markdown) + "\n"
    (directory / "report.md").write_text(text)
    (directory / "report.html").write_text(_html(table, directory, best, gif, game, games))
    return text


def _embedded(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


SCREEN_STYLE = "width:320px;image-rendering:pixelated"  # the 160-pixel-wide screen, twice its size


def _same_agent(one: AgentScores | None, other: AgentScores) -> bool:
    """The same weights under the same protocol (as ``gather_evaluations`` counts an agent once)."""
    return one is not None and (one.weights_sha256, one.protocol) == (other.weights_sha256, other.protocol)


def _video(path: Path, caption: str, poster: str = "", fallback: str = "") -> str:
    """An HTML5 video of ``path`` (a file beside the page), ``fallback`` for a browser without <video>."""
    name = html.escape(path.name)
    shown = f' poster="{poster}"' if poster else ""
    link = f'<a href="{name}">{name}</a>'
    return (
        f'<figure style="display:inline-block;margin:0 1em 0 0"><video controls preload="metadata"{shown} '
        f'style="{SCREEN_STYLE}"><source src="{name}" type="video/mp4">{fallback or link}</video>'
        f"<figcaption>{html.escape(caption)}: {link}</figcaption></figure>"
    )


def _html(
    table: pd.DataFrame,
    directory: Path,
    best: AgentScores | None,
    gif: Path | None,
    game: str,
    games: WatchedGames | None = None,
) -> str:
    """A page with its images inlined and no external resources, opens offline; the videos of ``games`` are
    files beside it (the report's folder), linked by name."""
    images = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{_embedded(directory / name, "image/png")}">'
        for title, name in [
            ("Learning curves", "learning_curves.png"),
            ("Score distributions", "score_distributions.png"),
        ]
    )
    if gif is not None:
        label = html.escape(best.label)
        images += f'<h2>Best agent playing: {label}</h2><img alt="best agent" style="{SCREEN_STYLE}" src="{_embedded(gif, "image/gif")}">'
    if games is not None:
        # The best agent's GIF, the first steps of the same game: the best game's poster, and what a browser
        # without <video> shows instead; another agent's videos have a heading of their own.
        poster = html.escape(gif.name) if gif is not None and _same_agent(best, games.agent) else ""
        if not poster:
            images += f"<h2>Best and median game: {html.escape(games.agent.label)}</h2>"
        fallback = f'<img alt="best game" src="{poster}">' if poster else ""
        best_game = _video(games.best, "best game", poster, fallback)
        images += f"<div>{best_game}{_video(games.median, 'median game')}</div>"
    title = html.escape(f"{game} DQN")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title} results</title><style>{style}</style></head>"
        f"<body><h1>{title}: results</h1><p>Unclipped game scores of whole games.</p>"
        f"{table.to_html(index=False, escape=True)}<p>{html.escape(SCORE_NOTE)}</p>{images}</body></html>\n"
    )
