"""Shipping a finished run: every file evaluate-shipped needs, the commit that trained it, never a partial copy."""

import json
import shutil
import subprocess

import pytest
from conftest import REPO

from invaders.agents.card import AgentCard
from invaders.errors import InputError
from invaders.shipping import ShippingError, main, ship

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


def test_a_bad_agent_card_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"agent.json: missing; run the train stage first"):
        AgentCard.read(tmp_path)
    values = json.loads((SHIPPED / "agent.json").read_text())
    for bad, problem in [({**values, "dueling": "yes"}, "dueling"), ({"backend": "native"}, "missing network")]:
        (tmp_path / "agent.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=problem) as raised:
            AgentCard.read(tmp_path)
        assert "\n" not in str(raised.value) and str(tmp_path / "agent.json") in str(raised.value)
