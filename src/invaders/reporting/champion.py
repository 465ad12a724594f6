"""Who holds the ``champion`` alias of the registered agents: decided on a fresh, paired test, or by hand.

    invaders champion challenge [VERSION] [--dry-run]   # the newest version by default
    invaders champion move VERSION --reason "why"       # by hand (a pinned alias too)
    invaders champion pin VERSION --reason "why"        # and no challenge moves it until unpin
    invaders champion unpin --reason "why"
    invaders champion status

A challenge plays the challenger and the holder now, both on the same ``evaluation.episodes`` validation
games (game k starts from emulator seed ``evaluation.validation_seed + k``), under params.yaml's game and
evaluation protocol, and pairs their scores by the seeds the games actually played. The alias moves only
when the paired t interval of the mean per-game difference (challenger minus holder), at
``report.confidence``, lies above 0. Scores stored from earlier evaluations never decide, and the test games
(``evaluation.test_seed``) are never played here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from invaders.config import Params, load_params
from invaders.errors import ConfigError, InputError, UserError

VALIDATION = "validation"  # the seed range a challenge plays: choosing never plays the test games
DRY_RUN = "dry run"


@dataclass(frozen=True)
class PairedTest:
    """A challenger against the holder on the same games: the means and the paired interval of their difference."""

    first_seed: int  # the games played: first_seed, first_seed + 1, ...
    games: int
    challenger_mean: float  # points
    holder_mean: float  # points
    mean_difference: float  # challenger minus holder, mean over the games (points)
    ci_low: float  # the paired t interval of that mean at ``confidence`` (points)
    ci_high: float
    confidence: float

    @property
    def confident_win(self) -> bool:
        """The challenger takes the alias: its interval lies above 0."""
        return self.ci_low > 0.0

    def describe(self, challenger: str, holder: str) -> str:
        """The test in one line: who played which games, the means, the difference and its interval."""
        return (
            f"v{challenger} vs v{holder} on {self.games} validation games (seeds {self.first_seed}-"
            f"{self.first_seed + self.games - 1}): means {self.challenger_mean:.1f} vs {self.holder_mean:.1f}, "
            f"mean difference {self.mean_difference:+.1f}, {self.confidence:.0%} paired t interval "
            f"[{self.ci_low:.1f}, {self.ci_high:.1f}]"
        )


def paired_differences(challenger: dict[int, float], holder: dict[int, float], seeds: range) -> np.ndarray:
    """Challenger minus holder, game by game in seed order (``{seed: score}`` each); both must have played
    exactly the games ``seeds``: the seeds the evaluations report, not the ones asked for, decide."""
    for who, played in (("challenger", challenger), ("holder", holder)):
        if sorted(played) != list(seeds):
            outside = sorted(set(played) ^ set(seeds))
            raise InputError(
                f"the {who} played seeds {min(played, default=None)}-{max(played, default=None)} "
                f"({len(played)} games), not the validation games {seeds.start}-{seeds.stop - 1} "
                f"(first seed not in both: {outside[0]}); a paired test needs both on the same games"
            )
    return np.array([challenger[seed] - holder[seed] for seed in seeds], dtype=np.float64)


def paired_t_interval(differences: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """The mean per-game difference and its two-sided Student t interval at ``confidence``:
    mean +- t(n-1, (1 + confidence) / 2) * s / sqrt(n), with s the sample standard deviation (n - 1).

    Why a paired t interval: the two agents played the same games, so the game-to-game variance they share
    cancels in the differences, and n = 30 differences of game scores (each a sum over a whole game) are
    close enough to normal for the t interval's coverage. Against a percentile bootstrap of the same mean it
    is deterministic (no resampling seed) and wider at small n (the bootstrap acts as if the spread were
    known, a z interval with s scaled by sqrt((n-1)/n)), so a move needs at least the evidence it claims.
    Its lower end above 0 is a one-sided test at level (1 - confidence) / 2 (2.5% at 0.95).
    """
    from scipy import stats

    differences = np.asarray(differences, dtype=np.float64)
    if differences.size < 2:
        raise InputError(f"{differences.size} paired game(s): a paired interval needs 2 or more (evaluation.episodes)")
    mean = float(differences.mean())
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, differences.size - 1)) * float(
        differences.std(ddof=1) / np.sqrt(differences.size)
    )
    return mean, mean - half, mean + half


def paired_test(
    challenger: dict[int, float], holder: dict[int, float], first_seed: int, games: int, confidence: float
) -> PairedTest:
    """The paired test of two agents' scores ``{seed: score}`` on the games ``first_seed`` .. ``+ games - 1``."""
    differences = paired_differences(challenger, holder, range(first_seed, first_seed + games))
    mean, low, high = paired_t_interval(differences, confidence)
    seeds = range(first_seed, first_seed + games)
    return PairedTest(
        first_seed,
        games,
        float(np.mean([challenger[seed] for seed in seeds])),
        float(np.mean([holder[seed] for seed in seeds])),
        mean,
        low,
        high,
        confidence,
    )


def validation_games(params: Params) -> range:
    """The seeds of the games a challenge plays; a validation range that reaches into the test games is refused."""
    evaluation = params.evaluation
    games = evaluation.episodes
    validation = range(evaluation.validation_seed, evaluation.validation_seed + games)
    test = range(evaluation.test_seed, evaluation.test_seed + games)
    if validation.start < test.stop and test.start < validation.stop:
        raise ConfigError(
            f"evaluation.validation_seed = {evaluation.validation_seed}: its {games} games overlap the test games "
            f"from evaluation.test_seed = {evaluation.test_seed}; the champion is chosen on games never reported"
        )
    return validation


def play_version(params: Params, name: str, version: str) -> dict[int, float]:
    """Registered ``version`` of ``name`` plays the validation games now: ``{seed: game score}`` as played."""
    from invaders.agents.card import AgentCard
    from invaders.agents.policy import GreedyPolicy, play_evaluation
    from invaders.envs.atari import num_actions, observation_shape
    from invaders.models.networks import check_fits, load_model
    from invaders.tracking.registry import download_agent

    with tempfile.TemporaryDirectory() as folder:
        agent_dir, _ = download_agent(f"models:/{name}/{version}", Path(folder))
        model, spec = load_model(agent_dir, precision=AgentCard.read(agent_dir).precision or "float32")
        check_fits(spec, agent_dir, observation_shape(params.env), num_actions(params.env))
    episodes = play_evaluation(GreedyPolicy(model), params.env, params.evaluation, VALIDATION, show_progress=False)
    return {episode.seed: episode.score for episode in episodes}


@dataclass(frozen=True)
class Challenge:
    """What a challenge found and did."""

    challenger: str
    holder: str
    test: PairedTest
    moved: bool
    why_not: str  # "" when it moved

    def describe(self) -> str:
        if self.moved:
            verdict = "the alias moves"
        elif self.why_not == DRY_RUN:
            verdict = "dry run: the alias would move"
        else:
            verdict = f"the alias stays: {self.why_not}"
        return f"{self.test.describe(self.challenger, self.holder)}: {verdict}"


def why_it_stays(test: PairedTest, pin: dict | None, dry_run: bool) -> str:
    """Why the alias does not move after ``test``, "" when it moves: no confident win, a pin, a dry run."""
    if not test.confident_win:
        return "the interval does not lie above 0"
    if pin:
        return f"pinned by hand ({pin['reason']}); unpin to let a test move it"
    return DRY_RUN if dry_run else ""


def challenge(params: Params, version: str, dry_run: bool = False) -> Challenge:
    """Registered ``version`` challenges the champion of ``params.tracking.experiment`` on a fresh, paired test
    of the validation games; moves the alias on a confident win unless ``dry_run`` or the alias is pinned.
    The test is recorded on the challenger's version (and, when it moves, in the model's history)."""
    from invaders.tracking.registry import (
        champion_pin,
        champion_version,
        check_version,
        move_champion,
        record_challenge,
    )

    name = params.tracking.experiment
    check_version(name, version)
    holder = champion_version(name)
    if holder is None:
        raise InputError(f"{name} has no champion yet: name the first by hand (champion move VERSION --reason ...)")
    if str(version) == holder:
        raise InputError(f"VERSION = {version}: v{holder} already holds the champion alias")
    seeds = validation_games(params)
    challenger_scores = play_version(params, name, str(version))
    holder_scores = play_version(params, name, holder)
    test = paired_test(challenger_scores, holder_scores, seeds.start, len(seeds), params.report.confidence)
    why_not = why_it_stays(test, champion_pin(name), dry_run)
    result = Challenge(str(version), holder, test, moved=not why_not, why_not=why_not)
    if not dry_run:
        record_challenge(name, str(version), result.describe())
    if result.moved:
        move_champion(name, str(version), test.describe(str(version), holder), by="paired test")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="protocol, seeds and confidence")
    commands = parser.add_subparsers(dest="command", required=True)
    challenge_parser = commands.add_parser("challenge", help="a registered version plays the champion, paired")
    challenge_parser.add_argument(
        "version", nargs="?", help="the registered version of tracking.experiment to test (default: the newest)"
    )
    challenge_parser.add_argument("--dry-run", action="store_true", help="play and show the numbers; move nothing")
    for command, help_text in (("move", "point the alias at VERSION"), ("pin", "move and hold it there")):
        by_hand = commands.add_parser(command, help=help_text)
        by_hand.add_argument("version")
        by_hand.add_argument("--reason", default="", help="why, recorded on the model")
    commands.add_parser("unpin", help="let paired tests move the alias again").add_argument("--reason", default="")
    commands.add_parser("status", help="the holder, the pin and the last moves")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params)
        return _run(args, params)
    except UserError as error:
        print(f"champion: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, params: Params) -> int:
    from invaders.tracking import registry

    name = params.tracking.experiment
    if args.command == "challenge":
        version = args.version or registry.newest_version(name)
        print(f"champion: {challenge(params, version, args.dry_run).describe()}")
        return 0
    if args.command == "status":
        print(registry.champion_status(name))
        return 0
    if not args.reason.strip():
        raise InputError(f"--reason = {args.reason!r}: say why, in words; it is recorded on the model")
    if args.command == "unpin":
        registry.unpin_champion(name, args.reason)
        print(f"champion: {name} unpinned ({args.reason})")
        return 0
    registry.check_version(name, args.version)
    registry.move_champion(name, args.version, args.reason, by="hand")
    if args.command == "pin":
        registry.pin_champion(name, args.reason)
    print(f"champion: {name} v{args.version} {'pinned' if args.command == 'pin' else 'moved by hand'} ({args.reason})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
