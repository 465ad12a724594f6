"""Q-networks: the Nature 2015 CNN and the notebook's CNN, with a plain or a dueling head.

``build_q_network`` works with Keras 3 (the native backend) and with tf_keras (keras-rl2): both take
the same ``NetworkSpec`` and produce the same list of weight arrays, so weights move between them.
The spec's ``head`` names the output head (``HEADS``); a dueling head computes Q = V + A - mean(A).
With ``quantiles`` N > 0 the head learns N quantiles of each action's return instead of one value (QR-DQN,
Dabney et al. 2017): its layer ``QUANTILES_LAYER`` gives them, shape ``(actions, N)``, and the network's output
is still one Q-value per action, their mean, so acting, evaluation and serving read it as any Q-network.
Inputs are frame-major, ``(stack, H, W)`` for stacked grayscale frames or ``(window, H, W, 3)`` for
raw RGB frames, in 0..255; the network scales them itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from invaders.errors import InputError

# Bytes at the start of every .npz (a zip archive): a cheap check before numpy parses a foreign file.
_ZIP_MAGIC = b"PK\x03\x04"

HEADS = {
    "plain": "Dense(actions) on the last hidden layer",
    "dueling-shared": "keras-rl2's dueling_type='avg': one Dense(actions + 1) (V, then A) on the last hidden layer",
    "dueling-streams": "Wang et al. 2016: a value and an advantage stream, each with its own copy of the last "
    "hidden layer (512 units after the Nature CNN's convolutions)",
}
# The dueling head a network gets: the paper's streams for the Nature CNN; for the notebook's network,
# the head keras-rl2 adds itself, which its notebook preset trains with.
DUELING_HEADS = {"nature": "dueling-streams", "notebook": "dueling-shared"}
# The head of a spec or agent card written before heads had names (by dueling): keras-rl2's form or none.
HEAD_BEFORE_NAMES = {True: "dueling-shared", False: "plain"}
QUANTILES_LAYER = "quantiles"  # the layer of a quantile head that outputs (batch, actions, quantiles)
MAX_QUANTILES = 1000  # quantiles per action a spec accepts, as model.quantiles (Dopamine's QR-DQN uses 200)
# Hidden Dense layers after each network's convolutions, in units; a two-stream head copies the last one.
_HIDDEN_UNITS = {"nature": (512,), "notebook": (512, 256)}


def default_head(network: str, dueling: bool) -> str:
    return DUELING_HEADS[network] if dueling else "plain"


@dataclass(frozen=True)
class NetworkSpec:
    """Everything needed to rebuild a Q-network and check weights against it."""

    network: str  # "nature" or "notebook"
    dueling: bool
    input_shape: tuple[int, ...]  # frame-major observation shape
    num_actions: int
    head: str | None = None  # one of HEADS; None: the network's head for ``dueling`` (default_head)
    quantiles: int = 0  # per action: 0 one expected value (DQN); N > 0 N quantiles of the return (QR-DQN)

    def __post_init__(self):
        if self.head is None:
            object.__setattr__(self, "head", default_head(self.network, self.dueling))
        if self.head not in HEADS or (self.head != "plain") != self.dueling:
            raise ValueError(f"head {self.head!r} with dueling={self.dueling}; heads: {', '.join(HEADS)}")
        quantiles = self.quantiles
        if isinstance(quantiles, bool) or not isinstance(quantiles, int) or not 0 <= quantiles <= MAX_QUANTILES:
            raise ValueError(f"quantiles {quantiles!r}: a whole number from 0 (expected values) to {MAX_QUANTILES}")

    def with_dueling(self, dueling: bool) -> NetworkSpec:
        """This network, or, if ``dueling`` differs from it, the network's default head for ``dueling``."""
        return self if dueling == self.dueling else dataclasses.replace(self, dueling=dueling, head=None)

    def to_json(self) -> str:
        """The spec as JSON; ``quantiles`` only when set, so an expected-value network's file is as before."""
        values = asdict(self)
        if not self.quantiles:
            del values["quantiles"]
        return json.dumps(values, indent=2)

    @classmethod
    def from_json(cls, text: str) -> NetworkSpec:
        values = json.loads(text)
        dueling = values["dueling"]
        head = values.get("head", HEAD_BEFORE_NAMES[dueling])
        shape, actions = tuple(values["input_shape"]), values["num_actions"]
        return cls(values["network"], dueling, shape, actions, head, values.get("quantiles", 0))


def _torso_layers(keras: Any, network: str, dtype: str | None) -> list:
    """The convolutions, flattened."""

    def conv(filters: int, size: int, stride: int):
        return keras.layers.Conv2D(filters, size, strides=stride, activation="relu", dtype=dtype)

    if network == "nature":
        return [
            # (stack, H, W) -> (H, W, stack): TF's CPU convolutions want channels last
            keras.layers.Permute((2, 3, 1), dtype=dtype),
            conv(32, 8, 4),
            conv(64, 4, 2),
            conv(64, 3, 1),
            keras.layers.Flatten(dtype=dtype),
        ]
    # The notebook's network: the same convolutions applied to each of the window's RGB frames.
    return [
        keras.layers.TimeDistributed(conv(32, 8, 4), dtype=dtype),
        keras.layers.TimeDistributed(conv(64, 4, 2), dtype=dtype),
        keras.layers.TimeDistributed(conv(64, 3, 1), dtype=dtype),
        keras.layers.Flatten(dtype=dtype),
    ]


def build_q_network(spec: NetworkSpec, keras: Any = None, head: str | None = None, precision: str = "float32"):
    """Build the Q-network of ``spec`` with the given Keras module (Keras 3 by default).

    ``head`` builds another head than the spec's: keras-rl2 wants ``plain`` where it adds its own
    dueling head. ``precision="bfloat16"`` computes the body in bfloat16 (Keras' ``mixed_bfloat16``:
    float32 weights, cast at each layer) and the Q-value head in float32, where bf16's 8-bit mantissa
    would blur the small gaps between actions' values; the weights are the same float32 arrays either way.
    A spec with ``quantiles`` gets the quantile form of its head (``_quantile_head``).
    """
    if keras is None:
        import keras
    head = head or spec.head
    body_dtype = "mixed_bfloat16" if precision == "bfloat16" else None

    def hidden(units: int, name: str | None = None):
        return keras.layers.Dense(units, activation="relu", dtype=body_dtype, name=name)

    inputs = keras.Input(shape=spec.input_shape, name="observation")
    x = keras.layers.Rescaling(1.0 / 255.0, dtype=body_dtype)(inputs)
    for layer in _torso_layers(keras, spec.network, body_dtype):
        x = layer(x)
    *shared_units, last_units = _HIDDEN_UNITS[spec.network]
    for units in shared_units:
        x = hidden(units)(x)
    if spec.quantiles:
        outputs = _quantile_head(keras, x, spec, head, hidden, last_units)
        return keras.Model(inputs, outputs, name=f"{spec.network}_{head.replace('-', '_')}_qr{spec.quantiles}")
    if head == "dueling-streams":
        value = keras.layers.Dense(1, name="value")(hidden(last_units, "value_hidden")(x))
        advantages = keras.layers.Dense(spec.num_actions, name="advantages")(hidden(last_units, "advantage_hidden")(x))
        x = keras.layers.Concatenate(name="value_and_advantages")([value, advantages])
    else:
        x = hidden(last_units)(x)
    if head == "dueling-shared":
        x = keras.layers.Dense(spec.num_actions + 1, name="value_and_advantages")(x)
    if head == "plain":
        outputs = keras.layers.Dense(spec.num_actions, name="q")(x)
    else:
        outputs = dueling_combine_class(keras)(name="dueling_q")(x)
    return keras.Model(inputs, outputs, name=f"{spec.network}_{head.replace('-', '_')}")


def _quantile_head(keras: Any, x, spec: NetworkSpec, head: str, hidden, last_units: int):
    """The quantile form of ``head`` on the features ``x``: N = ``spec.quantiles`` outputs where the head has one.

    plain: Dense(actions x N); dueling-shared: Dense((actions + 1) x N), V then A; dueling-streams: the value
    stream Dense(N), the advantage stream Dense(actions x N). A dueling head combines each quantile
    separately, Z_i = V_i + A_i - mean over actions of A_i. The layer ``QUANTILES_LAYER`` outputs the
    (actions, N) quantiles; the model's output is their mean per action, the Q-values.
    """
    actions, n = spec.num_actions, spec.quantiles
    if head == "dueling-streams":
        value = keras.layers.Dense(n, name="value")(hidden(last_units, "value_hidden")(x))
        advantages = keras.layers.Dense(actions * n, name="advantages")(hidden(last_units, "advantage_hidden")(x))
        value = keras.layers.Reshape((1, n), name="value_quantiles")(value)
        advantages = keras.layers.Reshape((actions, n), name="advantage_quantiles")(advantages)
        packed = keras.layers.Concatenate(axis=1, name="value_and_advantages")([value, advantages])
    elif head == "dueling-shared":
        packed = keras.layers.Dense((actions + 1) * n, name="value_and_advantages")(hidden(last_units)(x))
        packed = keras.layers.Reshape((actions + 1, n), name="value_and_advantage_quantiles")(packed)
    else:
        flat = keras.layers.Dense(actions * n, name="q_quantiles")(hidden(last_units)(x))
        return quantile_mean(keras, keras.layers.Reshape((actions, n), name=QUANTILES_LAYER)(flat))
    return quantile_mean(keras, dueling_combine_class(keras)(name=QUANTILES_LAYER)(packed))


def quantile_mean(keras: Any, quantiles):
    """The Q-values of a (batch, actions, N) quantile tensor: the mean over its N quantiles, as a layer
    (Keras' own average pooling, with the actions as channels: no custom layer to register)."""
    return keras.layers.GlobalAveragePooling1D(data_format="channels_first", name="q")(quantiles)


def quantile_view(model):
    """A model sharing ``model``'s layers (weights) that outputs its quantiles, (batch, actions, N)."""
    import keras

    return keras.Model(model.input, model.get_layer(QUANTILES_LAYER).output, name=f"{model.name}_quantiles")


@functools.cache
def dueling_combine_class(keras: Any):
    """The dueling combination as a layer class of ``keras`` (Keras 3 or tf_keras), made on first use so
    importing this module does not start TensorFlow."""
    mean = keras.ops.mean if hasattr(keras, "ops") else keras.backend.mean  # tf_keras has no ops module

    # Registered so keras-rl2 can clone a network that holds it (it round-trips the model's config).
    @keras.saving.register_keras_serializable(package="invaders")
    class DuelingCombine(keras.layers.Layer):
        """Q = V + A - mean(A) from a (value, advantages...) vector; on (value, advantages..., quantiles)
        rows, the same for each quantile."""

        def call(self, x):
            value, advantages = x[:, :1], x[:, 1:]
            return value + advantages - mean(advantages, axis=1, keepdims=True)

    return DuelingCombine


def parameter_count(model) -> int:
    return int(sum(np.prod(weight.shape) for weight in model.weights))


def forward_flops(model) -> int:
    """Analytic multiply-add FLOPs (2 per MAC) of one forward pass for one sample."""
    flops = 0
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # TimeDistributed wraps a Conv2D and repeats it over time
        kernel = getattr(inner, "kernel", None)
        if kernel is not None:
            outputs = int(np.prod(layer.output.shape[1:]))
            flops += 2 * int(np.prod(kernel.shape[:-1])) * outputs
    return flops


def save_weights(model, spec: NetworkSpec, directory: Path) -> None:
    """Write ``weights.npz`` and ``spec.json`` into ``directory`` (which the caller publishes atomically)."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f"w{i:03d}": np.asarray(weight) for i, weight in enumerate(model.get_weights())}
    np.savez(directory / "weights.npz", **arrays)
    (directory / "spec.json").write_text(spec.to_json())


def load_spec(directory: Path) -> NetworkSpec:
    path = Path(directory) / "spec.json"
    try:
        return NetworkSpec.from_json(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: missing; run the stage that writes it (dvc repro)") from None
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path}: not a network spec written by this project ({error})") from None


def check_fits(spec: NetworkSpec, directory: Path, observation_shape: tuple[int, ...], actions: int) -> None:
    """InputError unless the network saved in ``directory`` takes these observations and actions."""
    if tuple(spec.input_shape) != tuple(observation_shape) or spec.num_actions != actions:
        raise InputError(
            f"{directory / 'spec.json'}: the network takes observations {tuple(spec.input_shape)} with "
            f"{spec.num_actions} actions, the environment gives {tuple(observation_shape)} with {actions}; "
            "rerun the stages that made it (dvc repro)"
        )


def read_weight_arrays(directory: Path) -> list[np.ndarray]:
    """The weight arrays saved in ``directory``, in order; InputError for anything but this project's file."""
    path = Path(directory) / "weights.npz"
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except FileNotFoundError:
        raise InputError(f"{path}: missing; run the stage that writes it (dvc repro)") from None
    if magic != _ZIP_MAGIC:
        raise InputError(f"{path}: not a weights file written by this project (not an .npz archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (OSError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: unreadable or truncated weights file ({type(error).__name__})") from None
    if not members or not all(name.endswith(".npy") for name in members):
        raise InputError(f"{path}: a zip archive but not a weights file written by this project")
    try:
        with np.load(path) as archive:
            arrays = [archive[name] for name in sorted(archive.files)]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"{path}: unreadable or truncated weights file ({type(error).__name__})") from None
    return arrays


def load_weight_arrays(directory: Path, model) -> list[np.ndarray]:
    """The weight arrays saved in ``directory``, checked against ``model``'s shapes."""
    path = Path(directory) / "weights.npz"
    arrays = read_weight_arrays(directory)
    expected = [tuple(weight.shape) for weight in model.weights]
    found = [tuple(array.shape) for array in arrays]
    if expected != found:
        raise InputError(f"{path}: weights do not fit the {model.name} network ({len(found)} arrays, shapes differ)")
    return arrays


def load_model(directory: Path, keras: Any = None, precision: str = "float32"):
    """Rebuild the network saved in ``directory`` (computing in ``precision``) and load its weights."""
    spec = load_spec(directory)
    model = build_q_network(spec, keras, precision=precision)
    model.set_weights(load_weight_arrays(directory, model))
    return model, spec
