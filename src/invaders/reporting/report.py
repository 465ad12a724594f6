"""The comparison report: every evaluated agent beside the random one, from the runs in MLflow.

Input is plain pandas frames (one row per agent, the per-game scores, the learning curves) so the
report can be built and tested without a tracking store; ``gather.gather_agents`` reads them from MLflow.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from invaders.config import rom_name  # noqa: E402
from invaders.evaluation.statistics import bootstrap_ci, summarize  # noqa: E402


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
    curve: pd.DataFrame | None = None  # mean training game score per log interval: columns step, value
    run_id: str = ""  # the MLflow run of the evaluation, which holds its GIF


def game_title(env_id: str) -> str:
    """The game's name for titles: ``ALE/SpaceInvaders-v5`` -> ``Space Invaders``."""
    return rom_name(env_id).replace("_", " ").title()


def results_table(agents: list[AgentScores], confidence: float, samples: int) -> pd.DataFrame:
    rows = []
    for agent in agents:
        stats = summarize(agent.scores)
        low, high = bootstrap_ci(agent.scores, confidence, samples)
        rows.append(
            {
                "agent": agent.label,
                "training steps": f"{agent.train_steps:,}",
                "train time": _duration(agent.train_wall_time_s),
                "mean +- std": f"{stats['mean']:.1f} +- {stats['std']:.1f}",
                "median": f"{stats['median']:.0f}",
                f"{confidence:.0%} CI of mean": f"[{low:.1f}, {high:.1f}]",
                "games": stats["episodes"],
                "experiment": agent.experiment,
                "commit": agent.commit[:7],
                "protocol": agent.protocol,
            }
        )
    return pd.DataFrame(rows)


def _duration(seconds: float) -> str:
    if seconds <= 0:
        return "-"
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def plot_learning_curves(agents: list[AgentScores], path: Path, window: int = 5) -> None:
    figure, axes = plt.subplots(figsize=(8, 4.5))
    random_mean = next((a.scores.mean() for a in agents if a.train_steps == 0), None)  # the first: this protocol
    for agent in agents:
        if agent.curve is None or agent.curve.empty:
            continue
        smooth = agent.curve["value"].rolling(window, min_periods=1).mean()
        axes.plot(agent.curve["step"], smooth, label=agent.label)
    if random_mean is not None:
        axes.axhline(random_mean, color="grey", linestyle="--", label="random agent (evaluation mean)")
    axes.set_xlabel("agent steps")
    axes.set_ylabel(f"game score while training\n(rolling mean of {window} log intervals)")
    axes.set_title("Learning curves")
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_score_distributions(agents: list[AgentScores], path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 0.6 * len(agents) + 1.8))
    axes.boxplot([a.scores for a in agents], vert=False, showmeans=True)
    for row, agent in enumerate(agents, start=1):
        jitter = np.random.default_rng(row).uniform(-0.15, 0.15, agent.scores.size)
        axes.scatter(agent.scores, row + jitter, s=8, alpha=0.5)
    axes.set_yticks(range(1, len(agents) + 1), [a.label for a in agents], fontsize=8)
    axes.set_xlabel("game score (evaluation games)")
    axes.set_title("Score distributions")
    axes.grid(alpha=0.3, axis="x")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(
    agents: list[AgentScores],
    directory: Path,
    confidence: float,
    samples: int,
    best: AgentScores | None,
    gif: Path | None,
    *,
    game: str,
) -> str:
    """Write report.md, report.html and the plots into ``directory``, titled for ``game``; return the Markdown."""
    table = results_table(agents, confidence, samples)
    plot_learning_curves(agents, directory / "learning_curves.png")
    plot_score_distributions(agents, directory / "score_distributions.png")
    markdown = [
        f"# {game} DQN: results",
        "",
        "Every evaluated agent in the MLflow experiment, latest evaluation of each, beside the random agent.",
        "Scores are unclipped game scores of whole games under the protocol shown.",
        "",
        table.to_markdown(index=False),
        "",
        "![learning curves](learning_curves.png)",
        "",
        "![score distributions](score_distributions.png)",
    ]
    if gif is not None:
        markdown += ["", f"Best agent playing ({best.label}):", "", f"![best agent]({gif.name})"]
    text = "\n".join(markdown) + "\n"
    (directory / "report.md").write_text(text)
    (directory / "report.html").write_text(_html(table, directory, best, gif, game))
    return text


def _embedded(path: Path, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _html(table: pd.DataFrame, directory: Path, best: AgentScores | None, gif: Path | None, game: str) -> str:
    """A self-contained page: images inlined, no external resources, opens offline."""
    images = "".join(
        f'<h2>{html.escape(title)}</h2><img alt="{html.escape(title)}" src="{_embedded(directory / name, "image/png")}">'
        for title, name in [
            ("Learning curves", "learning_curves.png"),
            ("Score distributions", "score_distributions.png"),
        ]
    )
    if gif is not None:
        label = html.escape(best.label)
        images += f'<h2>Best agent playing: {label}</h2><img alt="best agent" src="{_embedded(gif, "image/gif")}">'
    title = html.escape(f"{game} DQN")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title} results</title><style>{style}</style></head>"
        f"<body><h1>{title}: results</h1><p>Unclipped game scores of whole games.</p>"
        f"{table.to_html(index=False, escape=True)}{images}</body></html>\n"
    )
