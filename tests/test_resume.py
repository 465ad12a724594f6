"""Interrupted training resumes: checkpoints restore the exact state, and a killed stage continues
its MLflow run with every metric step logged once."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_env import BandGameVectorEnv
from repo_copy import environment, make_repo, run, write_params

from invaders.agents.dqn import DQNLearner
from invaders.agents.training import DQNTrainer
from invaders.checkpoints import CheckpointStore
from invaders.config import TrainConfig
from invaders.models.networks import NetworkSpec, build_q_network
from invaders.replay.frame_replay import FrameReplay
from invaders.resume import CheckpointWriter
from invaders.tracking.queries import metric_history, run_in_experiment, stage_runs
from invaders.tracking.run import HeldMetrics, RecordingRun
from invaders.tracking.stage_run import StageRun
from invaders.tracking.store import client_for, tracking_uri

SPEC = NetworkSpec("nature", False, (4, 44, 44), 3)
CONFIG = TrainConfig(steps=500, num_envs=2, replay_capacity=2_000, warmup_fraction=0.2, log_interval=100, n_step=2)


def trainer(seed: int) -> DQNTrainer:
    import keras

    keras.utils.set_random_seed(seed)
    learner = DQNLearner(build_q_network(SPEC), build_q_network(SPEC), CONFIG)
    replay = FrameReplay(CONFIG.replay_capacity, 2, (44, 44), 4, CONFIG.n_step, CONFIG.gamma)
    return DQNTrainer(BandGameVectorEnv(num_envs=2), learner, replay, CONFIG, lambda metrics, step: None)


def test_checkpoint_restores_replay_networks_optimizer_and_counters(tmp_path):
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    first = trainer(seed=0)

    def save(current: DQNTrainer) -> None:
        store.save(current.steps, current.state_dict())

    began = time.perf_counter()
    first.run(save, checkpoint_interval=150, show_progress=False)
    first_run_s = time.perf_counter() - began
    kept = sorted(path.name for path in store.directory.iterdir())
    assert len(kept) == 2 and kept[-1] >= "step-000000000450", kept
    state = store.latest()

    second = trainer(seed=1)
    second.load_state_dict(state)
    assert second.result.steps == state["trainer.steps"] and second.resumes == 1
    assert second.result.wall_time_s == state["trainer.wall_time_s"] > 0
    assert second.learner.updates == int(state["learner.updates"])
    assert int(second.learner.optimizer.iterations.numpy()) == second.learner.updates
    assert 0 < second.replay.written < second.replay.capacity_per_env, (
        "a memory not yet full: only its written part is saved"
    )
    assert state["replay.frames.0"].shape[0] == second.replay.written
    # finals differ by design: restore ends the games that were in progress at the checkpoint
    for name, saved in second.replay.state_dict().items():
        if not name.startswith("finals."):
            np.testing.assert_array_equal(saved, state[f"replay.{name}"])
    for mine, saved in zip(
        second.learner.online.get_weights(), [state[k] for k in sorted(state) if k.startswith("learner.online.")]
    ):
        np.testing.assert_array_equal(mine, saved)
    assert second.exploration_rng.bit_generator.state == state["trainer.exploration_rng"]
    assert second.replay_rng.bit_generator.state == state["trainer.replay_rng"]
    # The games in progress ended at the checkpoint: no sample bootstraps across the gap.
    assert second.replay.finals[:, (second.replay.written - 1) % second.replay.capacity_per_env].all()
    assert 0 < state["trainer.wall_time_s"] < first_run_s
    began = time.perf_counter()
    result = second.run(show_progress=False)
    assert (
        state["trainer.wall_time_s"] < result.wall_time_s < state["trainer.wall_time_s"] + time.perf_counter() - began
    )
    assert result.steps >= CONFIG.steps


def test_a_checkpoint_without_games_ends_them_even_with_an_environment_that_could_restore_them():
    from fake_env import DelayedRewardVectorEnv

    saved = trainer(seed=0)
    saved.run(show_progress=False)  # BandGameVectorEnv cannot save its games
    state = saved.state_dict()
    assert not any(key.startswith("games.") for key in state)
    restored = trainer(seed=1)
    restored.env = DelayedRewardVectorEnv(num_envs=2)
    restored.load_state_dict(state)
    assert restored.games is None, "new games start"
    assert restored.replay.finals[:, (restored.replay.written - 1) % restored.replay.capacity_per_env].all()


def test_sigterm_during_training_checkpoints_then_stops():
    import os

    saved = []
    current = trainer(seed=0)

    def terminate_midway(metrics, step):
        if step >= 200 and not saved:
            os.kill(os.getpid(), signal.SIGTERM)  # caught by the trainer: it stops between two vector steps

    current.on_metrics = terminate_midway
    with pytest.raises(KeyboardInterrupt):
        current.run(lambda trainer: saved.append(trainer.steps), checkpoint_interval=10_000, show_progress=False)
    assert len(saved) == 1 and 200 <= saved[0] < CONFIG.steps
    assert signal.getsignal(signal.SIGTERM) is not current._request_stop, "the previous handler is back"


@pytest.mark.parametrize("quantiles", [0, 8], ids=["expected-values", "qr-dqn-8-quantiles"])
def test_resumed_training_in_a_new_process_matches_training_straight_through(tmp_path, quantiles):
    """Training is deterministic for a seed, so k steps + checkpoint + restore elsewhere + N-k steps must
    equal N steps: losses, online and target weights, every optimizer variable, replay, games, counters;
    with the dueling head in either form, expected values or QR-DQN's quantiles."""
    import exact_resume

    straight = exact_resume.build_trainer(seed=0, quantiles=quantiles)
    straight.run(show_progress=False)
    expected = straight.state_dict()

    class Interrupted(Exception):
        pass

    def checkpoint_then_crash(trainer) -> None:
        CheckpointStore(tmp_path).save(trainer.steps, trainer.state_dict())
        raise Interrupted

    interrupted = exact_resume.build_trainer(seed=0, quantiles=quantiles)
    with pytest.raises(Interrupted):
        interrupted.run(checkpoint_then_crash, checkpoint_interval=250, show_progress=False)
    assert 250 <= interrupted.result.steps < exact_resume.CONFIG.steps
    assert any(0 < t < 6 for t in interrupted.env.t), "games were in progress at the checkpoint"
    worker = subprocess.run(
        [sys.executable, "exact_resume.py", str(tmp_path), str(quantiles)],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]
    state = CheckpointStore(tmp_path / "final").latest()

    assert sorted(state) == sorted(expected)
    assert any(key.startswith("learner.optimizer.") for key in state) and "learner.target.000" in state
    arrays = [key for key, value in expected.items() if isinstance(value, np.ndarray)]
    assert len(arrays) > 20
    for key in arrays:
        np.testing.assert_array_equal(state[key], expected[key], err_msg=key)
    curve = pd.DataFrame(state["trainer.curve"]).drop(columns="train/steps_per_second")
    expected_curve = pd.DataFrame(expected["trainer.curve"]).drop(columns="train/steps_per_second")
    pd.testing.assert_frame_equal(curve, expected_curve, check_exact=True)
    assert curve["train/loss"].notna().sum() >= 8, "losses compared, not only NaNs"
    for key in ("steps", "next_log", "next_eval", "exploration_rng", "replay_rng", "interval"):
        assert state[f"trainer.{key}"] == expected[f"trainer.{key}"], key


@pytest.mark.e2e
def test_killed_training_resumes_the_same_run_with_each_metric_step_once(tmp_path):
    overrides = {"train": {"steps": 2_000, "checkpoint_interval": 400, "log_interval": 100, "replay_capacity": 60_000}}
    root = make_repo(tmp_path / "repo", overrides)
    env = environment(root)
    run(["dvc", "repro", "build-model"], root, env)
    env["PYTHONPATH"] = str(root / "src")
    checkpoints = root / "checkpoints" / "workspace" / "train"

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "stages/train.py"], cwd=root, env=env, stderr=subprocess.PIPE, text=True
        )

    def wait_for(condition, process: subprocess.Popen, limit: float = 240.0) -> None:
        deadline = time.monotonic() + limit
        while not condition():
            assert process.poll() is None, process.stderr.read()[-2000:]
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.005)

    committed = lambda: sorted(checkpoints.glob("step-*")) if checkpoints.is_dir() else []  # noqa: E731
    writing = lambda: checkpoints.is_dir() and any(checkpoints.glob(".step-*.tmp"))  # noqa: E731

    # 1. SIGKILL after the first checkpoint.
    process = start()
    wait_for(lambda: len(committed()) >= 1, process)
    time.sleep(1.0)
    process.kill()
    process.wait()
    # 2. SIGKILL in the middle of writing a checkpoint.
    process = start()
    wait_for(writing, process)
    process.kill()
    process.wait()
    assert not (root / "models" / "trained").exists(), "a killed stage publishes no weights"
    # 3. Ctrl-C: writes a checkpoint, exits non-zero.
    process = start()
    before = committed()[-1].name
    wait_for(lambda: committed() and committed()[-1].name != before, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "interrupted" in stderr
    # 4. The same command finishes the run.
    done = subprocess.run([sys.executable, "stages/train.py"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from the checkpoint" in done.stderr

    assert json.loads((root / "results/train/metrics.json").read_text())["total_steps"] >= 2_000
    assert not checkpoints.exists(), "checkpoints are removed once the run is complete"
    os.environ["DVC_ROOT"] = str(root)
    try:
        runs = stage_runs("space-invaders-dqn", "train")
        assert len(runs) == 1, "one MLflow run across all the attempts"
        run_id = runs.iloc[0]["run_id"]
        history = metric_history(run_id, "train/episodes")
        steps = history["step"].tolist()
        assert len(steps) == len(set(steps)), "no step logged twice"
        assert len(steps) == 20, f"one row per 100 steps, no gaps: {steps}"
        client = client_for(tracking_uri())
        assert client.get_run(run_id).info.status == "FINISHED"
    finally:
        del os.environ["DVC_ROOT"]


@pytest.mark.e2e
def test_checkpoint_from_other_params_is_discarded_in_one_line(tmp_path):
    root = make_repo(tmp_path / "repo", {"train": {"steps": 5_000, "checkpoint_interval": 300}})
    env = environment(root)
    run(["dvc", "repro", "build-model"], root, env)
    env["PYTHONPATH"] = str(root / "src")
    process = subprocess.Popen([sys.executable, "stages/train.py"], cwd=root, env=env, stderr=subprocess.DEVNULL)
    checkpoints = root / "checkpoints" / "workspace" / "train"
    deadline = time.monotonic() + 240
    while not (checkpoints.is_dir() and any(checkpoints.glob("step-*"))):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    process.kill()
    process.wait()
    write_params(root, {"train": {"learning_rate": 2.0e-4, "steps": 400}})
    done = subprocess.run([sys.executable, "stages/train.py"], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "was made with train.learning_rate 0.0001 -> 0.0002, train.steps 5000 -> 400; starting fresh" in done.stderr
    assert not checkpoints.exists(), "the finished run leaves no checkpoint behind"


def test_unreadable_checkpoint_is_skipped_with_one_line(tmp_path, capsys):
    store = CheckpointStore(tmp_path, keep=2)
    store.save(100, {"values": np.arange(1_000), "steps": 100})
    newest = store.save(200, {"values": np.arange(1_000), "steps": 200})
    data = (newest / "values.npy").read_bytes()
    (newest / "values.npy").write_bytes(data[: len(data) // 2])  # a file cut short by a crash
    state = store.latest()
    assert state["steps"] == 100 and int(state["values"][-1]) == 999
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "step-000000000100" / "state.json").write_text("{not json")
    assert store.latest() is None


def test_checkpoint_store_replaces_the_same_step_and_removes_a_killed_writers_leftovers(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    (tmp_path / ".step-000000000100.tmp").mkdir()  # a writer killed mid-way
    (tmp_path / ".step-000000000050.deleted").mkdir()  # killed mid-delete
    store.save(100, {"values": np.arange(3), "steps": 100})
    store.save(100, {"values": np.arange(4), "steps": 100})  # Ctrl-C right after a periodic checkpoint
    assert sorted(path.name for path in tmp_path.iterdir()) == ["step-000000000100"]
    assert len(store.latest()["values"]) == 4


class _SavedState:
    """What a trainer hands the writer: its steps and its state."""

    steps = 10

    def state_dict(self):
        return {"values": np.arange(3)}


def test_a_fresh_run_keeps_old_checkpoints_until_it_writes_its_own(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    store = CheckpointStore(tmp_path / "checkpoints", keep=2)
    store.save(900, {"values": np.arange(5), "checkpoint.steps": 900})
    with StageRun("train", "resume-test", hold_metrics=True) as run:
        writer = CheckpointWriter(store, run, {"train.seed": "0"}, fresh=True)
        assert store.latest()["checkpoint.steps"] == 900, "stopping before the first checkpoint loses nothing"
        writer(_SavedState())
        assert [path.name for path in store.directory.iterdir()] == ["step-000000000010"]
        assert store.latest()["checkpoint.run_id"] == run.run_id
    assert run_in_experiment(run.run_id, "resume-test")
    assert not run_in_experiment(run.run_id, "another-experiment")
    assert not run_in_experiment("0" * 32, "resume-test")


def test_the_newest_complete_checkpoint_wins_over_a_killed_writers_folder_and_an_older_format(tmp_path, capsys):
    store = CheckpointStore(tmp_path, keep=3)
    store.save(100, {"values": np.arange(3), "steps": 100})
    (tmp_path / ".step-000000000300.tmp").mkdir()  # a writer killed before its rename
    older = tmp_path / "step-000000000200"  # written by a version that kept meta.json
    older.mkdir()
    (older / "meta.json").write_text('{"steps": 200}')
    assert store.latest()["steps"] == 100
    assert capsys.readouterr().err.strip() == f"checkpoint {older}: written by an older version of invaders; skipped"


# --- the metrics hand-over between an interrupted run and its resumption, driven directly --------------------


class _Killed(Exception):
    """The process died here."""


class _DyingRun(RecordingRun):
    """A stored run whose process dies after ``writes`` more writes of metric rows."""

    def __init__(self, writes: int):
        super().__init__("run-1")
        self.writes = writes

    def write_rows(self, rows, tags):
        if self.writes == 0:
            raise _Killed
        self.writes -= 1
        super().write_rows(rows, tags)


class _Trainer:
    """A trainer at 300 agent steps whose state is one array; it keeps what a checkpoint gives back."""

    steps = 300
    loaded: dict | None = None

    def state_dict(self):
        return {"values": np.arange(3)}

    def load_state_dict(self, state):
        self.loaded = state


def _held_rows(count: int) -> HeldMetrics:
    """A held run ``count`` metric rows long (one per agent step), on a store that takes one write of them."""
    held = HeldMetrics(_DyingRun(writes=1))
    for step in range(count):
        held.log_metrics({"train/loss": 0.5}, step=step)
    return held


def test_a_flush_cut_short_marks_only_the_rows_that_arrived_as_delivered():
    held = _held_rows(250)  # three writes of ROWS_PER_WRITE; the store gets the first only
    rows = held.take_pending()
    with pytest.raises(_Killed):
        held.flush_checkpoint("300", rows)
    assert [step for step, _ in held.run.history("train/loss")] == list(range(HeldMetrics.ROWS_PER_WRITE))
    assert held.flushed_through("300") == HeldMetrics.ROWS_PER_WRITE, "the rows that never arrived count as missing"
    assert held.flushed_through("600") == 0, "another checkpoint's count says nothing about this one's"


def test_a_resumed_run_sends_the_rows_its_checkpoint_holds_that_the_store_never_got(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    held = _held_rows(250)
    with pytest.raises(_Killed):  # killed mid-flush, right after the checkpoint was committed
        CheckpointWriter(store, held, {"train.seed": "0"}, fresh=True)(_Trainer())
    stored = held.run
    assert len(stored.rows) == HeldMetrics.ROWS_PER_WRITE

    stored.writes = -1  # the resumed process: its store takes every write
    resumed = CheckpointWriter(store, HeldMetrics(stored), {"train.seed": "0"}, fresh=False)
    trainer = _Trainer()
    resumed.restore(trainer)
    assert trainer.loaded["checkpoint.steps"] == 300
    assert [step for step, _ in stored.history("train/loss")] == list(range(250)), "every step once, none lost"
    assert HeldMetrics(stored).flushed_through("300") == 250
