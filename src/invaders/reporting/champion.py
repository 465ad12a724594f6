"""Who holds the ``champion`` alias: the best version under the default protocol, moved only on a
confident win (its CI's lower bound above the holder's mean; with no holder, above random's mean)."""

from __future__ import annotations

from dataclasses import dataclass

SCORES_HEADING = "Scores:"  # the paragraph of a version's description the report rewrites


@dataclass(frozen=True)
class Scored:
    """One registered version's evaluation under the default protocol."""

    version: str
    mean: float
    ci_low: float
    ci_high: float
    label: str = ""


def challenger(scored: list[Scored], holder: str | None, random_mean: float | None) -> tuple[Scored, str] | None:
    """The version that takes the alias now, and why; None when the holder keeps it (or none qualifies)."""
    if not scored:
        return None
    best = max(scored, key=lambda entry: (entry.mean, int(entry.version)))
    if best.version == holder:
        return None
    current = next((entry for entry in scored if entry.version == holder), None)
    if current is not None:
        bar, against = current.mean, f"champion v{current.version}'s mean {current.mean:.1f}"
    elif random_mean is not None:
        bar, against = random_mean, f"random's mean {random_mean:.1f}"
    else:
        return None
    if best.ci_low <= bar:
        return None
    return best, f"v{best.version} CI [{best.ci_low:.1f}, {best.ci_high:.1f}] lies above {against}"


def scores_paragraph(entry: Scored, protocol: str, random_mean: float | None) -> str:
    beside = f"; random scores {random_mean:.1f}" if random_mean is not None else ""
    return (
        f"{SCORES_HEADING} mean {entry.mean:.1f}, CI [{entry.ci_low:.1f}, {entry.ci_high:.1f}]{beside} "
        f"(protocol: {protocol})."
    )


def with_scores(description: str, paragraph: str) -> str:
    """``description`` with its scores paragraph replaced by ``paragraph``."""
    kept = [part for part in (description or "").split("\n\n") if part and not part.startswith(SCORES_HEADING)]
    return "\n\n".join([*kept, paragraph])
