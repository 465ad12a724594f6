"""Shipping a finished run: every file evaluate-shipped needs, the commit that trained it, never a partial copy;\nseed groups of shipped agents, checked."""

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from shipped_seeds import SEEDS, shipped_with

from invaders.agents.card import AgentCard
from invaders.errors import InputError
from invaders.shipping import SeedGroup, ShippingError, is_experiment, main, seed_groups, ship

SHIPPED = REPO / "shipped" / "dqn-100k"


# A stand-in for the pipeline's train and evaluate stages: they copy the shipped 100k run into place.
STAGES = """\
import shutil, sys
from pathlib import Path

import yaml

SHIPPED = Path(sys.argv[2])
COPIES = {
    "train": [("weights.npz", "models/trained/weights.npz"), ("spec.json", "models/trained/spec.json"),
              ("agent.json", "models/trained/agent.json"), ("curve.csv", "results/train/curve.csv"),
              ("train_metrics.json", "results/train/metrics.json")],
    "evaluate": [("evaluation_metrics.json", "results/evaluate/metrics.json")],
}
for source, target in COPIES[sys.argv[1]]:
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SHIPPED / source, target)
if sys.argv[1] == "evaluate":
    games = yaml.safe_load(open("params.yaml"))["evaluation"]["episodes"]
    rows = "".join(f"{game},{100.0 * (game + 1)},500,2000,False\\n" for game in range(games))
    Path("results/evaluate/episodes.csv").write_text("episode,game_score,steps,frames,truncated\\n" + rows)
    Path("results/evaluate/episode.gif").write_bytes(b"GIF89a")
"""


def run_in(root: Path, *command: str) -> str:
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout


def dvc(root: Path, *args: str) -> str:
    return run_in(root, sys.executable, "-m", "dvc", *args)


@pytest.fixture(scope="module")
def committed_run(tmp_path_factory):
    """A DVC repository whose train and evaluate stages (``STAGES``) ran with ``dvc repro``, all committed."""
    root = tmp_path_factory.mktemp("committed") / "workspace"
    root.mkdir()
    shutil.copy(SHIPPED / "params.yaml", root / "params.yaml")
    (root / "stages.py").write_text(STAGES)
    stage = f"{sys.executable} stages.py {{}} {SHIPPED}"
    (root / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "train": {
                        "cmd": stage.format("train"),
                        "deps": ["stages.py"],
                        "params": ["train"],
                        "outs": ["models/trained"],
                        "metrics": ["results/train/metrics.json"],
                        "plots": ["results/train/curve.csv"],
                    },
                    "evaluate": {
                        "cmd": stage.format("evaluate"),
                        "deps": ["stages.py", "models/trained"],
                        "params": ["evaluation"],
                        "outs": ["results/evaluate/episodes.csv", "results/evaluate/episode.gif"],
                        "metrics": ["results/evaluate/metrics.json"],
                    },
                }
            }
        )
    )
    run_in(root, "git", "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    dvc(root, "repro", "-q")
    run_in(root, "git", "add", "-A")
    run_in(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "a committed run")
    return root


@pytest.fixture
def workspace(committed_run, tmp_path):
    """A copy of ``committed_run``: a repository after a finished run, laid out as the train and evaluate
    stages leave it, its work tree exactly its commit."""
    return Path(shutil.copytree(committed_run, tmp_path / "workspace", symlinks=True))


def test_ship_copies_the_run_and_records_its_commit(workspace, tmp_path):
    target = ship(workspace, "dqn-test", tmp_path / "shipped", command="dvc exp run -S train.steps=100000")
    assert sorted(path.name for path in target.iterdir()) == sorted(path.name for path in SHIPPED.iterdir())
    agent = json.loads((target / "agent.json").read_text())
    head = run_in(workspace, "git", "rev-parse", "HEAD").strip()
    assert agent["git_commit"] == head and agent["trained_with"] == "dvc exp run -S train.steps=100000"
    assert agent["experiment"] == "workspace", "a committed dvc repro: the work tree is the commit"
    assert agent["dvc_train_md5"] == train_md5(workspace) and agent["dvc_train_md5"].endswith(".dir")
    assert agent["head"] == "dueling-shared", "a card without a head gets the one its spec names"
    assert (target / "weights.npz").read_bytes() == (SHIPPED / "weights.npz").read_bytes()


def train_md5(workspace: Path) -> str:
    outs = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["train"]["outs"]
    return next(out["md5"] for out in outs if out["path"] == "models/trained")


def test_an_agent_ships_from_its_dvc_experiment_with_the_experiment_and_the_train_stage_hash(workspace, tmp_path):
    head = run_in(workspace, "git", "rev-parse", "HEAD").strip()
    committed = train_md5(workspace)
    dvc(workspace, "exp", "run", "-q", "-n", "seed-one", "-S", "train.seed=1")
    assert run_in(workspace, "git", "status", "--porcelain").split() == ["M", "dvc.lock", "M", "params.yaml"]
    # refs of DVC's own, as an interrupted run leaves them: at the (root) baseline commit and at the experiment
    listed = run_in(workspace, "git", "for-each-ref", "--format=%(refname) %(objectname)", "refs/exps")
    seed_one = next(line.split()[1] for line in listed.splitlines() if line.split()[0].endswith("/seed-one"))
    root = run_in(workspace, "git", "rev-list", "--max-parents=0", "HEAD").split()[0]
    run_in(workspace, "git", "update-ref", "refs/exps/exec/EXEC_HEAD", root)
    run_in(workspace, "git", "update-ref", "refs/exps/exec/EXEC_BRANCH", seed_one)
    agent = AgentCard.read(ship(workspace, "dqn-seed-one", tmp_path / "shipped"))
    assert (agent.git_commit, agent.experiment) == (head, "seed-one")
    assert agent.dvc_train_md5 == train_md5(workspace) == committed, "the stand-in stage copies the same weights"


def test_only_experiment_refs_name_experiments_not_dvcs_own_refs():
    assert is_experiment("refs/exps/4f/" + "0123456789abcdef0123456789abcdef012345" + "/seed-one")
    for own in ["refs/exps/exec/EXEC_HEAD", "refs/exps/exec/EXEC_BRANCH", "refs/exps/celery/stash", "refs/exps/stash"]:
        assert not is_experiment(own)


def test_a_dirty_tree_or_an_agent_trained_outside_dvc_is_refused_with_one_line(workspace, tmp_path, capsys):
    shipped = ["dqn-test", "--workspace", str(workspace), "--destination", str(tmp_path / "shipped")]
    (workspace / "stages.py").write_text((workspace / "stages.py").read_text() + "# a change\n")
    assert main(shipped) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"ship: {workspace} has uncommitted changes no DVC experiment on ") and "\n" not in error
    assert "(stages.py): ship only what `dvc exp run` trained on a clean commit" in error
    run_in(workspace, "git", "checkout", "--", "stages.py")
    (workspace / "notes.py").write_text("an untracked file counts too\n")
    assert main(shipped) == 2 and "(notes.py)" in capsys.readouterr().err
    (workspace / "notes.py").unlink()
    # weights trained again outside DVC (invaders-experiment in the same folder): not what dvc.lock records
    (workspace / "models/trained/weights.npz").write_bytes(b"other weights")
    assert main(shipped) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"ship: {workspace}: the train stage differs from dvc.lock (") and "\n" not in error
    assert not (tmp_path / "shipped" / "dqn-test").exists()


def test_ship_refuses_to_overwrite_an_unfinished_run_or_a_bad_name(workspace, tmp_path, capsys):
    ship(workspace, "dqn-test", tmp_path / "shipped")
    with pytest.raises(ShippingError, match="exists"):
        ship(workspace, "dqn-test", tmp_path / "shipped")
    with pytest.raises(ShippingError, match="name='../up'"):
        ship(workspace, "../up", tmp_path / "shipped")

    raw = yaml.safe_load((workspace / "params.yaml").read_text())
    raw["train"]["steps"] = 200_000  # the run stopped before it, as a killed training leaves it
    (workspace / "params.yaml").write_text(yaml.safe_dump(raw))
    assert main(["other", "--workspace", str(workspace), "--destination", str(tmp_path / "shipped")]) == 2
    assert capsys.readouterr().err.strip() == "ship: train_steps=100000: the run stopped before its 200000 steps"
    assert not (tmp_path / "shipped" / "other").exists()


def test_agent_cards_of_shipped_agents_read_and_round_trip(tmp_path):
    card = AgentCard.read(SHIPPED)  # shipped before cards recorded the experiment: still read
    # Its card predates head names: the head Q-networks had then (keras-rl2's form), in the label.
    assert card.label == "native nature-dueling-shared 100,000 steps" and card.experiment is None
    assert card.as_params()["agent.git_commit"] == card.git_commit
    card.write(tmp_path)
    assert AgentCard.read(tmp_path) == card
    assert json.loads((tmp_path / "agent.json").read_text()) == json.loads((SHIPPED / "agent.json").read_text())
    # An agent trained in bfloat16 says so in its label: the report's rows tell it from a float32 one.
    assert AgentCard.read(SHIPPED.parent / "dqn-100k-bf16").label == "native nature-dueling-shared 100,002 steps bf16"
    # A QR-DQN agent's card records its quantiles (and its label names them); an expected-value one's has none.
    assert "quantiles" not in json.loads((SHIPPED / "agent.json").read_text()) and card.quantiles is None
    qr = dataclasses.replace(card, quantiles=200, head="dueling-streams")
    qr.write(tmp_path)
    assert AgentCard.read(tmp_path) == qr and qr.label == "native nature-dueling-streams-qr200 100,000 steps"
    assert dataclasses.replace(card, dueling=False, head="plain").label == "native nature 100,000 steps"


def test_a_bad_agent_card_is_one_line_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"agent.json: missing; run the train stage first"):
        AgentCard.read(tmp_path)
    values = json.loads((SHIPPED / "agent.json").read_text())
    for bad, problem in [({**values, "dueling": "yes"}, "dueling"), ({"backend": "native"}, "missing network")]:
        (tmp_path / "agent.json").write_text(json.dumps(bad))
        with pytest.raises(InputError, match=problem) as raised:
            AgentCard.read(tmp_path)
        assert "\n" not in str(raised.value) and str(tmp_path / "agent.json") in str(raised.value)


def test_seed_groups_name_their_row_and_members_and_the_project_s_groups_pass_the_checks(tmp_path):
    group = {"dqn-100k x3 seeds": list(SEEDS)}
    assert seed_groups(shipped_with(tmp_path, group, SEEDS)) == [SeedGroup("dqn-100k x3 seeds", tuple(SEEDS))]
    five = tuple(f"dqn-100k-seed{seed}" for seed in range(5))
    independent = tuple(f"dqn-100k-indep-seed{seed}" for seed in range(5))
    assert seed_groups(REPO) == [  # checked like any other group
        SeedGroup("dqn-100k x5 seeds, shared init", five),
        SeedGroup("dqn-100k x5 seeds, independent", independent),
    ]


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


def test_a_seed_group_is_one_commit(tmp_path):
    root = shipped_with(tmp_path, {"x": list(SEEDS)}, SEEDS, commits={"dqn-100k-seed1": "0123456789abcdef"})
    with pytest.raises(InputError) as raised:
        seed_groups(root)
    assert str(raised.value).startswith(
        "shipped/agents.yaml: seed_groups['x']: dqn-100k-seed1 was trained at commit 0123456789, dqn-100k-seed0 at "
    )


def test_seed_groups_must_be_a_mapping(tmp_path):
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped/agents.yaml").write_text("shipped: [a, b]\nseed_groups: [a, b]\n")
    with pytest.raises(InputError, match=r"^shipped/agents.yaml: seed_groups: must map a row label to a list"):
        seed_groups(tmp_path)


def test_weights_too_big_for_git_ship_with_their_evaluation_which_the_pipeline_publishes(
    workspace, tmp_path, monkeypatch
):
    import hashlib

    from invaders import shipping
    from invaders.config import load_params
    from invaders.names import Tag
    from invaders.steps.evaluate import evaluate
    from invaders.tracking.run import RecordingRun

    monkeypatch.setattr(shipping, "GIT_FILE_LIMIT", 1000)  # dqn-100k's 7 MB of weights count as too big
    destination = tmp_path / "repo" / "shipped"
    (workspace / "results/evaluate/episodes.csv").unlink()
    with pytest.raises(ShippingError, match="results/evaluate/episodes.csv is missing"):
        ship(workspace, "big", destination)
    # the run's own protocol, not the project's: 3 games (100, 200, 300 points) at epsilon 0.2
    dvc(workspace, "exp", "run", "-q", "-S", "evaluation.epsilon=0.2", "-S", "evaluation.episodes=3")

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
