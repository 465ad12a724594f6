"""The champion alias on a fresh, paired test: the paired t interval against hand-computed values, a higher
mean whose interval includes 0 moves nothing, the decision reads the seeds the games actually played (the
validation range, never the test games), and on a real sqlite registry with real ALE games the challenger
and the holder play the same games; moves and pins by hand need a reason and are recorded on the model."""

import dataclasses
import json
import os

import numpy as np
import pytest
import yaml
from conftest import REPO, sqlite_store

from invaders.config import load_params, read_params_file
from invaders.errors import ConfigError, InputError
from invaders.names import Tag
from invaders.reporting.champion import (
    main,
    paired_differences,
    paired_t_interval,
    paired_test,
    validation_games,
    why_it_stays,
)
from invaders.tracking import registry
from invaders.tracking.stage_run import StageRun

NAME = "space-invaders-dqn"
HOLDER = REPO / "shipped" / "dqn-100k"


def test_the_paired_t_interval_matches_hand_computed_values():
    # d = 10 -5 20 0 15: mean 8, s^2 = 430 / 4 = 107.5, s / sqrt(5) = 4.63681, t(4, 0.975) = 2.776445
    mean, low, high = paired_t_interval(np.array([10.0, -5.0, 20.0, 0.0, 15.0]), 0.95)
    assert mean == 8.0 and low == pytest.approx(8.0 - 12.87387, abs=1e-4) and high == pytest.approx(20.87387, abs=1e-4)
    # d = 4 6 5 5: mean 5, s^2 = 2 / 3, s / sqrt(4) = 0.408248, t(3, 0.975) = 3.182446: half-width 1.299236
    mean, low, high = paired_t_interval(np.array([4.0, 6.0, 5.0, 5.0]), 0.95)
    assert (low, high) == (pytest.approx(3.700764, abs=1e-5), pytest.approx(6.299236, abs=1e-5))
    # 90%: t(3, 0.95) = 2.353363, half-width 0.960757
    assert paired_t_interval(np.array([4.0, 6.0, 5.0, 5.0]), 0.90)[1] == pytest.approx(4.039243, abs=1e-5)
    assert paired_t_interval(np.array([3.0, 3.0, 3.0]), 0.95) == (3.0, 3.0, 3.0)
    with pytest.raises(InputError, match="needs 2 or more"):
        paired_t_interval(np.array([5.0]), 0.95)


def test_a_higher_mean_whose_paired_interval_includes_0_does_not_move_the_alias():
    holder = {100 + game: score for game, score in enumerate([200.0, 300.0, 150.0, 400.0, 250.0])}
    challenger = {seed: holder[seed] + d for seed, d in zip(holder, [10.0, -5.0, 20.0, 0.0, 15.0])}
    test = paired_test(challenger, holder, 100, 5, 0.95)
    assert test.challenger_mean == 268.0 and test.holder_mean == 260.0 and test.mean_difference == 8.0
    assert test.ci_low < 0 < test.ci_high and not test.confident_win
    assert why_it_stays(test, None, dry_run=False) == "the interval does not lie above 0"
    clear = paired_test({seed: holder[seed] + d for seed, d in zip(holder, [4, 6, 5, 5, 5])}, holder, 100, 5, 0.95)
    assert clear.confident_win and why_it_stays(clear, None, dry_run=False) == ""
    assert why_it_stays(clear, None, dry_run=True) == "dry run"
    assert why_it_stays(clear, {"reason": "frozen for the paper"}, dry_run=False).startswith("pinned by hand")
    text = clear.describe("5", "3")
    assert text.startswith("v5 vs v3 on 5 validation games (seeds 100-104): means 265.0 vs 260.0")
    assert "mean difference +5.0, 95% paired t interval [" in text


def test_pairs_go_by_the_seeds_played_and_both_must_have_played_the_validation_games():
    holder = {100: 10.0, 101: 20.0, 102: 30.0}
    challenger = {102: 33.0, 100: 11.0, 101: 22.0}  # reported in another order: paired by seed all the same
    assert paired_differences(challenger, holder, range(100, 103)).tolist() == [1.0, 2.0, 3.0]
    test_games = {1000: 10.0, 1001: 20.0, 1002: 30.0}  # the holder's stored evaluation on the test games
    with pytest.raises(InputError, match=r"^the holder played seeds 1000-1002 \(3 games\), not the validation games"):
        paired_differences(challenger, test_games, range(100, 103))
    with pytest.raises(InputError, match="the challenger played seeds 100-101"):
        paired_differences({100: 1.0, 101: 2.0}, holder, range(100, 103))


def test_validation_games_never_reach_into_the_test_games():
    params = load_params(REPO / "params.yaml")
    assert validation_games(params) == range(100_000, 100_030)
    overlapping = dataclasses.replace(params, evaluation=dataclasses.replace(params.evaluation, validation_seed=1_010))
    with pytest.raises(ConfigError, match=r"^evaluation.validation_seed = 1010: its 30 games overlap the test games"):
        validation_games(overlapping)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite registry holding the shipped 100k agent twice (v1, v2: the same weights under two tags) and a
    params.yaml for 3 short validation games; v1 is the champion."""
    root = tmp_path_factory.mktemp("champion")
    raw = read_params_file(REPO / "params.yaml")
    raw["evaluation"].update(episodes=3, num_envs=3)
    raw["env"]["max_episode_frames"] = 800  # 200 agent steps a game: seconds, not minutes
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    with sqlite_store(root):
        card = registry.AgentCard.read(HOLDER)
        with StageRun("evaluate", NAME) as run:
            versions = [
                registry.log_agent(run, HOLDER, NAME, registry.agent_tags(card, sha), registry.describe(card))
                for sha in ("sha-holder", "sha-copy")
            ]
        yield {"root": root, "params": str(root / "params.yaml"), "versions": versions}


def test_moves_and_pins_by_hand_need_a_reason_and_are_recorded(store, capsys):
    first, second = store["versions"]
    params = ["--params", store["params"]]
    assert main([*params, "move", first]) == 2
    assert capsys.readouterr().err.strip() == "champion: --reason = '': say why, in words; it is recorded on the model"
    assert main([*params, "move", "99", "--reason", "x"]) == 2
    assert capsys.readouterr().err.strip().startswith(f"champion: VERSION = 99: {NAME} has no such version in ")
    assert main([*params, "pin", second, "--reason", "the paper's agent"]) == 0
    assert registry.champion_version(NAME) == second and registry.champion_pin(NAME)["reason"] == "the paper's agent"
    assert main([*params, "unpin", "--reason", "paper sent"]) == 0 and registry.champion_pin(NAME) is None
    assert main([*params, "move", first, "--reason", "the shipped 100k agent"]) == 0
    moves = registry.champion_moves(NAME)
    assert [(move["to"], move["by"], move["why"]) for move in moves[-3:]] == [
        (second, "hand", "the paper's agent"),
        (second, "unpin", "paper sent"),
        (first, "hand", "the shipped 100k agent"),
    ]
    capsys.readouterr()
    assert main([*params, "status"]) == 0
    assert capsys.readouterr().out.startswith(f"{NAME}: champion v{first}\n")


def test_a_challenge_plays_both_agents_now_on_the_same_validation_games(store, capsys):
    from mlflow import MlflowClient

    first, second = store["versions"]
    registry.move_champion(NAME, first, "start", by="hand")
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    assert main(["--params", store["params"], "challenge", "--dry-run"]) == 0  # the newest version: v2
    shown = capsys.readouterr().out
    assert f"v{second} vs v{first} on 3 validation games (seeds 100000-100002)" in shown, shown
    assert Tag.CHAMPION_CHALLENGE not in client.get_model_version(NAME, second).tags, "a dry run records nothing"

    assert main(["--params", store["params"], "challenge", second]) == 0
    # The same weights on the same games, seed by seed, play the same scores: a difference of exactly 0.
    assert "mean difference +0.0, 95% paired t interval [0.0, 0.0]: the alias stays" in capsys.readouterr().out
    assert registry.champion_version(NAME) == first
    recorded = client.get_model_version(NAME, second).tags[Tag.CHAMPION_CHALLENGE]
    assert "(seeds 100000-100002)" in recorded and "the interval does not lie above 0" in recorded
    assert main(["--params", store["params"], "challenge", first]) == 2
    assert "already holds the champion alias" in capsys.readouterr().err
    assert json.loads(client.get_registered_model(NAME).tags[Tag.CHAMPION_MOVES])[-1]["to"] == first
