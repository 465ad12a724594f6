"""params.yaml builds the real objects; every bad input gets one clear line before any work starts."""

import copy
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import REPO

from invaders.config import ConfigError, build_params, load_params

RAW = yaml.safe_load((REPO / "params.yaml").read_text())


def test_params_yaml_builds_the_real_environment_and_network():
    from invaders.envs.atari import make_vector_env, num_actions, observation_shape
    from invaders.models.networks import NetworkSpec, build_q_network

    params = load_params(REPO / "params.yaml")
    spec = NetworkSpec(
        params.model.network, params.model.dueling, observation_shape(params.env), num_actions(params.env)
    )
    model = build_q_network(spec)
    env = make_vector_env(params.env, 2)
    observations, info = env.reset(seed=0)
    assert observations.shape[1:] == spec.input_shape
    assert model(observations.astype("float32")).shape == (2, 6)
    assert env.single_action_space.n == 6
    assert params.train.steps > params.train.warmup_steps


def with_value(path: str, value):
    raw = copy.deepcopy(RAW)
    *sections, key = path.split(".")
    node = raw
    for section in sections:
        node = node[section]
    node[key] = value
    return raw


BAD_INPUTS = [
    ("trian.steps", 5, "trian: unknown params section; did you mean train?"),
    ("train.stepz", 5, "train.stepz: unknown key; did you mean train.steps?"),
    ("train.learning_rate", "fast", "train.learning_rate = 'fast': must be a number"),
    (
        "train.learning_rate",
        "1e-4",
        "train.learning_rate = '1e-4': must be a number (it is quoted text: remove the quotes)",
    ),
    ("train.steps", -10, "train.steps = -10: must be >= 1"),
    ("train.steps", "many", "train.steps = 'many': must be a whole number"),
    ("train.epsilon_start", 1.5, "train.epsilon_start = 1.5: must be >= 0.0 and <= 1.0"),
    ("train.batch_size", 500_000, "train.batch_size = 500000: must be >= 1 and <= 4096"),
    ("train.replay_capacity", 16, "train.batch_size = 32: must not exceed train.replay_capacity (16)"),
    ("train.warmup_fraction", 0.999, "train.warmup_fraction = 0.999: leaves 10 of train.steps (10000) to learn in"),
    ("evaluation.validation_seed", 1010, "evaluation.validation_seed = 1010: its 30 games overlap the test games"),
    ("evaluation.test_seed", 2**24, "evaluation.test_seed = 16777216: its games' seeds must stay below 16777216"),
    ("evaluation.split", "train", "evaluation.split = 'train': must be one of 'test', 'validation'"),
    ("train.double_dqn", "yes", "train.double_dqn = 'yes': must be true or false"),
    ("train.backend", "pytorch", "train.backend = 'pytorch': must be one of 'native', 'keras-rl2'"),
    ("evaluation.episodes", 0, "evaluation.episodes = 0: must be >= 1"),
    ("env.id", "ALE/SpaceInvader-v5", "env.id = 'ALE/SpaceInvader-v5': ale-py has no ROM 'space_invader'"),
    ("env.id", "space invaders", "env.id = 'space invaders': not an Atari id"),
    ("model.network", "resnet", "model.network = 'resnet': must be one of 'nature', 'notebook'"),
    ("model.quantiles", -1, "model.quantiles = -1: must be >= 0 and <= 1000"),
    ("model.quantiles", 2.5, "model.quantiles = 2.5: must be a whole number"),
    ("model.network", "notebook", "model.network = 'notebook': env.preprocessing = 'deepmind' feeds the 'nature'"),
    ("env.preprocessing", "raw", "env.preprocessing = 'raw': the native backend needs 'deepmind'"),
    ("tracking.experiment", " ", "tracking.experiment = '': must be a non-empty"),
]


@pytest.mark.parametrize(
    ("path", "value", "message"), BAD_INPUTS, ids=[case[0] + "=" + str(case[1]) for case in BAD_INPUTS]
)
def test_bad_input_names_key_value_and_what_is_allowed(path, value, message):
    raw = with_value(path, value) if not path.startswith("trian") else {**RAW, "trian": {"steps": value}}
    with pytest.raises(ConfigError) as error:
        build_params(raw)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_floats_read_as_dvc_writes_them(tmp_path):
    text = (REPO / "params.yaml").read_text().replace("learning_rate: 1.0e-4", "learning_rate: 1e-05")
    text = text.replace("max_grad_norm: 10.0", "max_grad_norm: 1.0e9")
    (tmp_path / "params.yaml").write_text(text)
    params = load_params(tmp_path / "params.yaml")
    assert params.train.learning_rate == 1e-05 and params.train.max_grad_norm == 1e9
    assert params.train.steps == RAW["train"]["steps"] and isinstance(params.train.steps, int)


def test_memory_too_small_for_the_environments():
    raw = with_value("train.replay_capacity", 40)
    raw["train"]["batch_size"] = 8
    with pytest.raises(ConfigError, match="train.replay_capacity = 40: must hold at least"):
        build_params(raw)


@pytest.mark.parametrize("stage", ["baseline", "build_model", "train", "evaluate", "report"])
def test_stage_rejects_bad_params_in_one_line_and_keeps_previous_outputs(tmp_path, stage):
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(with_value("train.learning_rate", "fast")))
    previous = tmp_path / "results" / "train" / "metrics.json"
    previous.parent.mkdir(parents=True)
    previous.write_text('{"steps": 42}')
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DVC_ROOT": str(tmp_path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    done = subprocess.run([sys.executable, f"stages/{stage}.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "train.learning_rate = 'fast': must be a number" in lines[0] and "Traceback" not in done.stderr
    assert previous.read_text() == '{"steps": 42}'
    assert not (tmp_path / "mlflow.db").exists(), "no run store is touched for a params mistake"


def test_unreachable_tracking_server_is_named_at_stage_start(tmp_path):
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    done = subprocess.run([sys.executable, "stages/train.py"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(
        "train: error: MLFLOW_TRACKING_URI = http://127.0.0.1:9: no MLflow server answers"
    )
    assert len(done.stderr.strip().splitlines()) == 1


def test_keras_rl2_replay_ratio_must_be_one_update_every_k_steps():
    raw = with_value("train.backend", "keras-rl2")
    raw["train"]["replay_ratio"] = 0.3
    with pytest.raises(ConfigError, match=r"train.replay_ratio = 0.3: keras-rl2 trains once every k agent steps"):
        build_params(raw)


def test_a_run_records_only_the_params_its_backend_reads():
    native = build_params(RAW).train.applied()
    kerasrl = build_params(with_value("train.backend", "keras-rl2")).train.applied()
    assert "n_step" in native and "memory_window" not in native
    assert "memory_window" in kerasrl and "n_step" not in kerasrl and "num_envs" not in kerasrl
    assert native["learning_rate"] == kerasrl["learning_rate"]


def test_quantiles_are_off_by_default_and_native_only():
    assert build_params(RAW).model.quantiles == 0 and RAW["model"]["quantiles"] == 0
    assert build_params(with_value("model.quantiles", 200)).model.quantiles == 200
    raw = with_value("train.backend", "keras-rl2")
    raw["model"]["quantiles"] = 200
    with pytest.raises(ConfigError) as error:
        build_params(raw)
    assert str(error.value) == (
        "model.quantiles = 200: QR-DQN is the native backend's; train.backend = 'keras-rl2' learns expected "
        "values only (model.quantiles = 0)"
    )
