"""Agents as MLflow models, on a real sqlite registry: logged once per module (the shipped 100k agent),
loaded by alias in a fresh process without PYTHONPATH, served by the real `mlflow models serve` on
127.0.0.1 with real emulator observations; the report writes each version's scores into its description
(the champion alias: test_champion.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, sqlite_store

from invaders.config import load_params
from invaders.errors import InputError
from invaders.names import Tag
from invaders.tracking import registry
from invaders.tracking.stage_run import StageRun

AGENT = REPO / "shipped" / "dqn-100k"
NAME = "space-invaders-dqn"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store holding the shipped 100k agent as version 1 of the registered model."""
    root = tmp_path_factory.mktemp("store")
    with sqlite_store(root):
        card = registry.AgentCard.read(AGENT)
        with StageRun("evaluate", NAME) as run:
            started = time.perf_counter()
            version = registry.log_agent(run, AGENT, NAME, registry.agent_tags(card, "sha-1"), registry.describe(card))
            elapsed = time.perf_counter() - started
        yield {"root": root, "version": version, "run_id": run.run_id, "log_seconds": elapsed}


@pytest.fixture(scope="module")
def observations():
    """32 real observations from the emulator (the shipped agent's game), and the weights' own actions."""
    from invaders.envs.atari import make_vector_env
    from invaders.models.networks import load_model

    env = make_vector_env(load_params(AGENT / "params.yaml").env, 4)
    frames, _ = env.reset(seed=7)
    rng = np.random.default_rng(0)
    batch = []
    for _ in range(8):
        batch.append(np.asarray(frames))
        frames, *_ = env.step(rng.integers(0, 6, 4))
    env.close()
    observations = np.concatenate(batch).astype(np.uint8)
    model, _ = load_model(AGENT)
    return observations, np.asarray(model(observations)).argmax(axis=1)


def clean_environment(root: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "DVC_ROOT")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    return env


def test_version_with_signature_tags_and_description(store):
    from mlflow import MlflowClient
    from mlflow.models import get_model_info

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    version = client.get_model_version(NAME, store["version"])
    assert version.tags[Tag.VERSION_TRAIN_STEPS] == "100000" and version.tags[Tag.BACKEND] == "native"
    assert version.tags[Tag.VERSION_COMMIT] and version.tags[Tag.DVC_EXP_NAME] == "workspace"
    assert "100,000 agent steps" in version.description
    info = get_model_info(f"models:/{NAME}/{store['version']}")
    inputs = info.signature.inputs.to_dict()[0]
    assert inputs["tensor-spec"]["dtype"] == "uint8" and list(inputs["tensor-spec"]["shape"]) == [-1, 4, 84, 84]
    assert [spec["name"] for spec in info.signature.outputs.to_dict()] == ["action", "q_values"]
    again = registry.log_agent(registry.mlflow_run(_run(store)), AGENT, NAME, {Tag.WEIGHTS_SHA256: "sha-1"}, "")
    assert again == store["version"], "the same weights keep their version"


def _run(store):
    from invaders.tracking.stage_run import MlflowRun
    from invaders.tracking.store import client_for

    return MlflowRun(client_for(os.environ["MLFLOW_TRACKING_URI"]), store["run_id"])


def test_loads_by_alias_in_a_fresh_process_and_plays_as_the_weights(store, observations, tmp_path):
    registry.move_champion(NAME, store["version"], "first", by="hand")
    assert registry.champion_version(NAME) == store["version"]
    frames, actions = observations
    np.save(tmp_path / "obs.npy", frames)
    script = (
        "import sys, numpy as np, mlflow.pyfunc\n"
        f"model = mlflow.pyfunc.load_model('models:/{NAME}@champion')\n"
        "out = model.predict(np.load(sys.argv[1]))\n"
        "import invaders; print(invaders.__file__)\n"
        "print(' '.join(map(str, out['action'].tolist())))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "obs.npy")],
        cwd=tmp_path,
        env=clean_environment(store["root"]),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.strip().splitlines()
    assert "/code/invaders/" in lines[-2] and str(REPO) not in lines[-2], (
        "the model plays with its own copy of the code"
    )
    assert [int(action) for action in lines[-1].split()] == actions.tolist()


def test_a_missing_uri_is_one_line(store):
    with pytest.raises(InputError, match=r"^--agent models:/space-invaders-dqn@nobody: no such model version"):
        registry.check_agent_uri(f"models:/{NAME}@nobody")
    with pytest.raises(InputError, match=r"no run"):
        registry.check_agent_uri("runs:/0123456789abcdef/agent")


def test_download_by_uri_gives_the_agent_folder(store, tmp_path):
    folder, version = registry.download_agent(f"models:/{NAME}/{store['version']}", tmp_path)
    assert version == store["version"]
    assert (folder / "weights.npz").read_bytes() == (AGENT / "weights.npz").read_bytes()
    assert (folder / "params.yaml").is_file() and (folder / "agent.json").is_file()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def test_served_model_answers_with_the_weights_actions_and_refuses_bad_requests(store, observations):
    registry.move_champion(NAME, store["version"], "served", by="hand")
    frames, actions = observations
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{NAME}@champion"]
        + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        env=clean_environment(store["root"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/invocations"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not answer within 90 s"
                time.sleep(0.5)
        status, answer = post(url, {"inputs": frames.tolist()})
        assert status == 200, answer
        assert answer["predictions"]["action"] == actions.tolist()
        assert np.asarray(answer["predictions"]["q_values"]).shape == (32, 6)
        bad = [
            ({"inputs": (frames[:1] + 0.5).tolist()}, "whole numbers 0..255"),
            ({"inputs": frames[:1, :3].tolist()}, "shape"),
            ({"inputs": (frames[:1].astype(int) + 300).tolist()}, ""),
            ({"inputs": "hello"}, ""),
        ]
        for body, message in bad:
            status, answer = post(url, body)
            assert 400 <= status < 500, (status, answer)
            assert message in answer.get("message", ""), answer
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_an_agent_ships_from_the_registry(store, tmp_path):
    from invaders.shipping import main

    assert main(["from-registry", "--model", f"models:/{NAME}/{store['version']}", "--destination", str(tmp_path)]) == 0
    shipped = tmp_path / "from-registry"
    assert (shipped / "weights.npz").read_bytes() == (AGENT / "weights.npz").read_bytes()
    card = registry.AgentCard.read(shipped)
    assert card.train_steps == 100000 and (shipped / "params.yaml").is_file()
    assert card.git_commit == registry.AgentCard.read(AGENT).git_commit, "a shipped agent keeps its provenance"
    assert main(["again", "--model", f"models:/{NAME}@nobody", "--destination", str(tmp_path)]) == 2


def test_a_sweep_trials_agent_ships_from_the_registry_with_its_commit_and_trial(store, tmp_path, monkeypatch):
    """The trial's train stage registers the agent (its card has no commit); its runs say where it came from."""
    import dataclasses

    from invaders.shipping import main
    from invaders.tracking.sweep_runs import open_sweep_run, open_trial_run

    commit = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("DVC_EXP_BASELINE_REV", commit)  # what the sweep driver hands its trials
    (tmp_path / "seeds.yaml").write_text("name: seeds\n")
    sweep = open_sweep_run(NAME, "seeds", tmp_path / "seeds.yaml", store["root"], None)
    trial = open_trial_run(NAME, sweep, "t_00001", "seed 1", {"train.seed": 1}, "127.0.0.2")
    card = registry.AgentCard.read(AGENT)
    trained = dataclasses.replace(card, git_commit=None, trained_with=None)
    folder = tmp_path / "trained"
    folder.mkdir()
    for name in ("weights.npz", "spec.json"):
        (folder / name).write_bytes((AGENT / name).read_bytes())
    trained.write(folder)
    with StageRun("train", NAME, parent_run_id=trial) as run:
        version = registry.log_agent(
            run, folder, NAME, registry.agent_tags(trained, "sha-trial"), "", AGENT / "params.yaml"
        )
    assert main(["trial-agent", "--model", f"models:/{NAME}/{version}", "--destination", str(tmp_path)]) == 0
    shipped = registry.AgentCard.read(tmp_path / "trial-agent")
    assert (shipped.git_commit, shipped.experiment) == (commit, "sweep seeds trial t_00001 (seed 1)")


def test_the_report_writes_each_versions_scores_into_its_description(store):
    from mlflow import MlflowClient

    protocol = "the protocol"
    scores = {"score_mean": 318.5, "score_ci_low": 277.8, "score_ci_high": 360.2}
    registry.record_scores(NAME, store["version"], scores, protocol)
    registry.describe_scores(NAME, protocol, 148.2)
    registry.describe_scores(NAME, protocol, 148.2)  # rewritten, not appended
    description = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_model_version(NAME, store["version"]).description
    assert description.count("Scores:") == 1 and "100,000 agent steps" in description
    assert description.endswith("Scores: mean 318.5, CI [277.8, 360.2]; random scores 148.2 (protocol: the protocol).")
