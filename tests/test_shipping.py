"""Shipping a finished run: every file evaluate-shipped needs, the commit that trained it, never a partial copy;\nseed groups of shipped agents, checked."""

import json
import shutil
import subprocess

import pytest
from conftest import REPO
from shipped_seeds import SEEDS, shipped_with

from invaders.agents.card import AgentCard
from invaders.errors import InputError
from invaders.shipping import SeedGroup, ShippingError, main, seed_groups, ship

SHIPPED = REPO / "shipped" / "dqn-100k"


@pytest.fixture
def workspace(tmp_path):
    """A repository after a finished run, laid out as the train and evaluate stages leave it."""
    root = tmp_path / "workspace"
    for source, target in [
        ("weights.npz", "models/trained/weights.npz"),
        ("spec.json", "models/trained/spec.json"),
        ("agent.json", "models/trained/agent.json"),
        ("params.yaml", "params.yaml"),
        ("curve.csv", "results/train/curve.csv"),
        ("train_metrics.json", "results/train/metrics.json"),
        ("evaluation_metrics.json", "results/evaluate/metrics.json"),
    ]:
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED / source, root / target)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
        cwd=root,
        check=True,
    )
    return root


def test_ship_copies_the_run_and_records_its_commit(workspace, tmp_path):
    target = ship(workspace, "dqn-test", tmp_path / "shipped", command="dvc exp run -S train.steps=100000")
    assert sorted(path.name for path in target.iterdir()) == sorted(path.name for path in SHIPPED.iterdir())
    agent = json.loads((target / "agent.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=workspace, capture_output=True, text=True).stdout
    assert agent["git_commit"] == head.strip() and agent["trained_with"] == "dvc exp run -S train.steps=100000"
    assert (target / "weights.npz").read_bytes() == (SHIPPED / "weights.npz").read_bytes()


def test_ship_refuses_to_overwrite_an_unfinished_run_or_a_bad_name(workspace, tmp_path, capsys):
    ship(workspace, "dqn-test", tmp_path / "shipped")
    with pytest.raises(ShippingError, match="exists"):
        ship(workspace, "dqn-test", tmp_path / "shipped")
    with pytest.raises(ShippingError, match="name='../up'"):
        ship(workspace, "../up", tmp_path / "shipped")

    agent = json.loads((workspace / "models/trained/agent.json").read_text())
    (workspace / "models/trained/agent.json").write_text(json.dumps({**agent, "train_steps": 1000}))
    assert main(["other", "--workspace", str(workspace), "--destination", str(tmp_path / "shipped")]) == 2
    assert capsys.readouterr().err.strip() == "ship: train_steps=1000: the run stopped before its 100000 steps"
    assert not (tmp_path / "shipped" / "other").exists()


def test_agent_cards_of_shipped_agents_read_and_round_trip(tmp_path):
    card = AgentCard.read(SHIPPED)
    assert card.label == "native nature-dueling 100,000 steps"
    assert card.as_params()["agent.git_commit"] == card.git_commit
    card.write(tmp_path)
    assert AgentCard.read(tmp_path) == card
    assert json.loads((tmp_path / "agent.json").read_text()) == json.loads((SHIPPED / "agent.json").read_text())
    # An agent trained in bfloat16 says so in its label: the report's rows tell it from a float32 one.
    assert AgentCard.read(SHIPPED.parent / "dqn-100k-bf16").label == "native nature-dueling 100,002 steps bf16"


def test_a_bad_agent_card_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"agent.json: missing; run the train stage first"):
        AgentCard.read(tmp_path)
    values = json.loads((SHIPPED / "agent.json").read_text())
    for bad, problem in [({**values, "dueling": "yes"}, "dueling"), ({"backend": "native"}, "missing network")]:
        (tmp_path / "agent.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=problem) as raised:
            AgentCard.read(tmp_path)
        assert "\n" not in str(raised.value) and str(tmp_path / "agent.json") in str(raised.value)


def test_seed_groups_name_their_row_and_members_and_the_project_ships_five_seeds(tmp_path):
    group = {"dqn-100k x3 seeds": list(SEEDS)}
    assert seed_groups(shipped_with(tmp_path, group, SEEDS)) == [SeedGroup("dqn-100k x3 seeds", tuple(SEEDS))]
    five = tuple(f"dqn-100k-seed{seed}" for seed in range(5))
    assert seed_groups(REPO) == [SeedGroup("dqn-100k x5 seeds", five)]  # checked like any other group


@pytest.mark.parametrize(
    ("groups", "seeds", "changed", "problem"),
    [
        ({"x": "dqn-100k-seed0"}, SEEDS, None, "['x']: must be a list of 2 or more shipped agents, one per seed"),
        ({"x": ["dqn-100k-seed0"]}, SEEDS, None, "['x']: must be a list of 2 or more shipped agents, one per seed"),
        ({"x": ["dqn-100k-seed0", "dqn-100k-seed7"]}, SEEDS, None, "['x']: dqn-100k-seed7 is not in the shipped list"),
        ({"x": ["dqn-100k-seed0", "dqn-100k-seed0"]}, SEEDS, None, "['x']: dqn-100k-seed0 is listed twice"),
        (
            {"x": list(SEEDS)[:2], "y": list(SEEDS)[1:]},
            SEEDS,
            None,
            "['y']: dqn-100k-seed1 is already in seed_groups['x']",
        ),
        (
            {"x": list(SEEDS)},
            SEEDS,
            {"dqn-100k-seed2": {"steps": 50_000}},
            "['x']: dqn-100k-seed2 has train.steps=50000, dqn-100k-seed0 100000: only train.seed may differ",
        ),
        (
            {"x": list(SEEDS)},
            {**SEEDS, "dqn-100k-seed2": 0},
            None,
            "['x']: dqn-100k-seed0 and dqn-100k-seed2 both have train.seed=0",
        ),
        (
            {"x": list(SEEDS)},
            SEEDS,
            {"dqn-100k-seed1": {"gamma": 2.0}},
            "['x']: dqn-100k-seed1: train.gamma = 2.0: must be",
        ),
    ],
)
def test_a_bad_seed_group_is_one_line_naming_the_file_the_key_and_the_problem(
    tmp_path, groups, seeds, changed, problem
):
    with pytest.raises(InputError) as raised:
        seed_groups(shipped_with(tmp_path, groups, seeds, changed))
    assert str(raised.value).startswith(f"shipped/agents.yaml: seed_groups{problem}")
    assert "\n" not in str(raised.value)


def test_seed_groups_must_be_a_mapping(tmp_path):
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped/agents.yaml").write_text("shipped: [a, b]\nseed_groups: [a, b]\n")
    with pytest.raises(InputError, match=r"^shipped/agents.yaml: seed_groups: must map a row label to a list"):
        seed_groups(tmp_path)


def test_weights_too_big_for_git_ship_with_their_evaluation_which_the_pipeline_publishes(
    workspace, tmp_path, monkeypatch
):
    import hashlib

    import yaml

    from invaders import shipping
    from invaders.config import load_params
    from invaders.names import Tag
    from invaders.stages.evaluate import evaluate
    from invaders.tracking.run import RecordingRun

    monkeypatch.setattr(shipping, "GIT_FILE_LIMIT", 1000)  # dqn-100k's 7 MB of weights count as too big
    destination = tmp_path / "repo" / "shipped"
    with pytest.raises(ShippingError, match="results/evaluate/episodes.csv is missing"):
        ship(workspace, "big", destination)
    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    raw["evaluation"].update(epsilon=0.2, episodes=3)  # the run's own protocol, not the project's
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))
    episodes = "episode,game_score,steps,frames,truncated\n0,100.0,500,2000,False\n1,200.0,600,2400,False\n"
    (workspace / "results/evaluate/episodes.csv").write_text(episodes + "2,300.0,700,2800,False\n")
    (workspace / "results/evaluate/episode.gif").write_bytes(b"GIF89a")

    target = ship(workspace, "big", destination)
    weights = (workspace / "models/trained/weights.npz").read_bytes()
    assert not (target / "weights.npz").exists()
    assert (tmp_path / "repo" / "shipped-weights" / "big" / "weights.npz").read_bytes() == weights
    digest = hashlib.sha256(weights).hexdigest()
    assert (target / "weights.sha256").read_text().split() == [
        digest,
        str(destination.parent / "shipped-weights/big/weights.npz"),
    ]
    assert (target / "evaluation_episodes.csv").read_text() == (workspace / "results/evaluate/episodes.csv").read_text()

    run, output = RecordingRun(), tmp_path / "results"
    summary = evaluate(load_params(REPO / "params.yaml"), run, None, agent_dir=target, output=output)
    assert summary["score_mean"] == 200.0 and summary["episodes"] == 3
    assert (
        run.params["evaluation.epsilon"] == "0.2" and run.params["evaluation.episodes"] == "3"
    )  # as MLflow keeps them
    assert ", eps 0.2," in run.tags[Tag.PROTOCOL] and run.tags[Tag.WEIGHTS_SHA256] == digest
    assert run.tags[Tag.RECORDED] == "true"
    assert (output / "episode.gif").read_bytes() == b"GIF89a" and (output / "metrics.json").is_file()
