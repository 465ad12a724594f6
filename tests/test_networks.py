"""The Q-networks' heads: the two-stream dueling head of Wang et al. 2016, keras-rl2's shared one, agents
saved before the head had a name, which keep theirs, and the quantile (QR-DQN) form of each head."""

import dataclasses
import json

import numpy as np
import pytest
from conftest import REPO

from invaders.errors import InputError
from invaders.models.networks import NetworkSpec, build_q_network, load_model, load_spec, parameter_count

NATURE = NetworkSpec("nature", True, (4, 84, 84), 6)
# Conv 8x8x4x32, 4x4x32x64, 3x3x64x64 (with biases) on 84x84 frames leave 7 x 7 x 64 = 3,136 features.
CONVOLUTIONS = (8 * 8 * 4 + 1) * 32 + (4 * 4 * 32 + 1) * 64 + (3 * 3 * 64 + 1) * 64
FEATURES = 7 * 7 * 64


def test_dueling_combination_is_value_plus_advantages_minus_their_mean():
    combine = build_q_network(NATURE).get_layer("dueling_q")
    # V = 1, A = (2, 4, 6): mean 4, Q = 1 + A - 4; V = -2, A = (0, 0, 3): mean 1, Q = -2 + A - 1.
    packed = np.array([[1.0, 2.0, 4.0, 6.0], [-2.0, 0.0, 0.0, 3.0]], np.float32)
    np.testing.assert_array_equal(np.asarray(combine(packed)), [[-1.0, 1.0, 3.0], [-3.0, -3.0, 0.0]])


def test_nature_dueling_network_has_a_value_and_an_advantage_stream_each_with_its_own_hidden_layer():
    assert NATURE.head == "dueling-streams"
    model = build_q_network(NATURE)
    flatten = model.get_layer("value_hidden").input
    for hidden, output, units in [("value_hidden", "value", 1), ("advantage_hidden", "advantages", 6)]:
        layer = model.get_layer(hidden)
        assert layer.input is flatten and layer.units == 512 and tuple(layer.kernel.shape) == (FEATURES, 512)
        assert model.get_layer(output).input is layer.output and model.get_layer(output).units == units
    streams = 2 * (FEATURES * 512 + 512) + (512 + 1) * 1 + (512 + 1) * 6
    assert parameter_count(model) == CONVOLUTIONS + streams == 3_293_863

    # Q = V + A - mean(A) from the streams' own outputs.
    observations = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84)).astype(np.float32)
    value = sub_model(model, "value")(observations).numpy()
    advantages = sub_model(model, "advantages")(observations).numpy()
    expected = value + advantages - advantages.mean(axis=1, keepdims=True)
    np.testing.assert_allclose(model(observations).numpy(), expected, rtol=1e-5, atol=1e-6)


def sub_model(model, layer: str):
    import keras

    return keras.Model(model.input, model.get_layer(layer).output)


def test_shared_head_is_keras_rl2s_one_dense_layer_on_the_shared_hidden_layer():
    shared = build_q_network(NetworkSpec("nature", True, (4, 84, 84), 6, "dueling-shared"))
    plain = build_q_network(NetworkSpec("nature", False, (4, 84, 84), 6))
    assert tuple(shared.get_layer("value_and_advantages").kernel.shape) == (512, 7)
    assert parameter_count(shared) == CONVOLUTIONS + FEATURES * 512 + 512 + (512 + 1) * 7 == 1_687_719
    assert parameter_count(plain) == parameter_count(shared) - 513  # one output fewer: no value
    assert NetworkSpec("notebook", True, (3, 210, 160, 3), 6).head == "dueling-shared"  # the notebook preset's


# Q-values of shipped/dqn-1m on the probe below, computed by the network code of commit 4ceabc0 (before the
# head had a name): the agent's spec.json has no head, so it must load with that head and compute these.
DQN_1M_Q = [
    [3.563253, 3.750579, 3.555299, 3.669215, 3.632771, 3.740761],
    [3.535980, 3.784806, 3.341115, 3.497556, 3.486432, 3.620185],
]


def test_an_agent_saved_before_heads_had_names_loads_with_its_head_and_its_q_values():
    agent = REPO / "shipped" / "dqn-1m"
    assert "head" not in json.loads((agent / "spec.json").read_text())
    model, spec = load_model(agent)
    assert spec.head == "dueling-shared" and spec.dueling
    probe = (np.arange(2 * 4 * 84 * 84) % 251).reshape(2, 4, 84, 84).astype(np.float32)
    probe[1] = probe[1][:, ::-1]
    np.testing.assert_allclose(model(probe).numpy(), DQN_1M_Q, atol=2e-6)
    bfloat16, _ = load_model(agent, precision="bfloat16")
    np.testing.assert_allclose(bfloat16(probe).numpy(), DQN_1M_Q, atol=0.02)


def test_spec_records_its_head_and_refuses_one_that_contradicts_dueling(tmp_path):
    assert NetworkSpec.from_json(NATURE.to_json()) == NATURE
    assert json.loads(NATURE.to_json())["head"] == "dueling-streams"
    assert NATURE.with_dueling(False).head == "plain" and NATURE.with_dueling(True) is NATURE
    old = NetworkSpec("nature", True, (4, 84, 84), 6, "dueling-shared")
    assert old.with_dueling(True) is old  # a kept setting keeps the saved head
    with pytest.raises(ValueError, match="head 'plain' with dueling=True"):
        NetworkSpec("nature", True, (4, 84, 84), 6, "plain")
    (tmp_path / "spec.json").write_text(json.dumps({**json.loads(NATURE.to_json()), "head": "dueling-max"}))
    with pytest.raises(InputError, match="not a network spec written by this project"):
        load_spec(tmp_path)


QR = NetworkSpec("nature", True, (4, 84, 84), 6, quantiles=5)  # the dueling-streams head, 5 quantiles per action


def test_a_quantile_head_outputs_the_quantiles_mean_as_its_q_values():
    from invaders.models.networks import QUANTILES_LAYER, quantile_view

    model = build_q_network(QR)
    quantiles = quantile_view(model)
    observations = np.random.default_rng(0).integers(0, 256, (3, 4, 84, 84)).astype(np.float32)
    z = quantiles(observations).numpy()
    assert z.shape == (3, 6, 5) and model(observations).shape == (3, 6)
    np.testing.assert_allclose(model(observations).numpy(), z.mean(axis=2), rtol=1e-6, atol=1e-6)
    # Each quantile is combined as a dueling head: Z_i = V_i + A_i - mean over actions of A_i.
    value = sub_model(model, "value")(observations).numpy()[:, None, :]
    advantages = sub_model(model, "advantages")(observations).numpy().reshape(3, 6, 5)
    np.testing.assert_allclose(z, value + advantages - advantages.mean(axis=1, keepdims=True), rtol=1e-5, atol=1e-5)
    assert [w.name for w in quantiles.trainable_variables] == [w.name for w in model.trainable_variables]
    assert model.get_layer(QUANTILES_LAYER).output.shape[1:] == (6, 5)
    # N quantiles where the head had one output: value 512 -> 5, advantages 512 -> 6 x 5.
    streams = 2 * (FEATURES * 512 + 512) + (512 + 1) * 5 + (512 + 1) * 30
    assert parameter_count(model) == CONVOLUTIONS + streams


@pytest.mark.parametrize("head", ["plain", "dueling-shared"])
def test_every_head_has_a_quantile_form(head):
    from invaders.models.networks import quantile_view

    spec = NetworkSpec("nature", head != "plain", (4, 84, 84), 6, head, quantiles=3)
    model = build_q_network(spec)
    outputs = 6 * 3 if head == "plain" else 7 * 3
    assert parameter_count(model) == CONVOLUTIONS + FEATURES * 512 + 512 + (512 + 1) * outputs
    observations = np.full((2, 4, 84, 84), 7.0, np.float32)
    np.testing.assert_allclose(
        model(observations).numpy(), quantile_view(model)(observations).numpy().mean(2), atol=1e-6
    )


def test_a_quantile_spec_round_trips_and_an_expected_value_spec_is_written_as_before(tmp_path):
    from invaders.models.networks import save_weights

    assert NetworkSpec.from_json(QR.to_json()) == QR and json.loads(QR.to_json())["quantiles"] == 5
    assert "quantiles" not in json.loads(NATURE.to_json()), "a default network's spec.json is unchanged"
    assert NetworkSpec.from_json(NATURE.to_json()).quantiles == 0
    assert QR.with_dueling(False) == NetworkSpec("nature", False, (4, 84, 84), 6, "plain", 5)
    for bad in (-1, 1001, 2.0, True):
        with pytest.raises(ValueError, match="quantiles"):
            NetworkSpec("nature", True, (4, 84, 84), 6, quantiles=bad)
    model = build_q_network(QR)
    save_weights(model, QR, tmp_path / "agent")
    loaded, spec = load_model(tmp_path / "agent")
    assert spec == QR
    probe = (np.arange(2 * 4 * 84 * 84) % 251).reshape(2, 4, 84, 84).astype(np.float32)
    np.testing.assert_array_equal(loaded(probe).numpy(), model(probe).numpy())
    # The quantiles are part of the network: weights of one head do not load into another.
    save_weights(model, dataclasses.replace(QR, quantiles=4), tmp_path / "other")
    with pytest.raises(InputError, match="weights do not fit"):
        load_model(tmp_path / "other")
