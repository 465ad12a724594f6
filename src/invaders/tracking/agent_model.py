"""An agent as an MLflow model, written as models-from-code: ``mlflow.pyfunc.load_model`` runs this file.

Input: uint8 observations shaped like the network's input, ``(-1, *spec.input_shape)``. Output: a dict
with ``action`` (the greedy action, int64) and ``q_values`` (float32, one per action). The weights and the
network spec come in as the model's artifacts; the network is rebuilt by ``invaders.models.networks``
from the model's own copy of the package (``code_paths``).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np


class AgentModel(mlflow.pyfunc.PythonModel):
    """The greedy policy of one Q-network: observations in, actions and Q-values out."""

    def load_context(self, context) -> None:
        import keras  # noqa: F401  (the network builder imports it too; first here to fail loudly)

        from invaders.models.networks import build_q_network, load_spec, read_weight_arrays

        folder = Path(context.artifacts["weights"]).parent  # artifacts land side by side
        self.spec = load_spec(folder)
        self.model = build_q_network(self.spec)
        self.model.set_weights(read_weight_arrays(folder))
        self.shape = tuple(self.spec.input_shape)
        _strict_uint8_requests()

    def predict(self, context, model_input, params=None) -> dict[str, np.ndarray]:
        observations = check_observations(model_input, self.shape)
        q_values = np.asarray(self.model(observations, training=False), dtype=np.float32)
        return {"action": q_values.argmax(axis=1).astype(np.int64), "q_values": q_values}


def check_observations(model_input, shape: tuple[int, ...]) -> np.ndarray:
    """``model_input`` as a uint8 batch of ``shape`` observations; ValueError saying what is wrong."""
    array = np.asarray(model_input)
    if array.dtype.kind not in "iu" or array.dtype == np.bool_:
        raise ValueError(f"observations must be integers 0..255 (uint8), got dtype {array.dtype}")
    if array.ndim != len(shape) + 1 or array.shape[1:] != shape:
        raise ValueError(f"observations must have shape (batch, {', '.join(map(str, shape))}), got {array.shape}")
    if array.size and (array.min() < 0 or array.max() > 255):
        raise ValueError(f"observations must be integers 0..255, got values {array.min()}..{array.max()}")
    return array.astype(np.uint8, copy=False)


def _strict_uint8_requests() -> None:
    """Refuse, in the server's JSON parsing, numbers that are not whole 0..255 for a uint8 tensor.

    MLflow's scoring server casts the request's lists to the signature's dtype with ``np.array(data,
    dtype=uint8)`` before ``predict`` runs, which turns 0.5 into 0 and 12.7 into 12 without a word. This
    wraps that cast (``proto_json_utils.convert_data_type``, MLflow 3.x) in the process that loads the
    model, so such a request gets a 400 naming the problem. Other dtypes are cast as before.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    from mlflow.types.schema import TensorSpec
    from mlflow.utils import proto_json_utils

    original = proto_json_utils.convert_data_type
    if getattr(original, "strict_uint8", False):
        return

    def convert_data_type(data, spec):
        if isinstance(spec, TensorSpec) and spec.type == np.dtype(np.uint8):
            try:
                values = np.asarray(data)
            except ValueError:  # ragged lists: MLflow's own cast says so
                values = None
            if values is not None and (values.dtype.kind not in "iu" or values.dtype == np.bool_):
                raise MlflowException(
                    f"observations must be whole numbers 0..255 (uint8), got {values.dtype} values "
                    f"such as {values.flat[0] if values.size else 'none'}",
                    INVALID_PARAMETER_VALUE,
                )
        return original(data, spec)

    convert_data_type.strict_uint8 = True
    proto_json_utils.convert_data_type = convert_data_type


mlflow.models.set_model(AgentModel())
