"""Stage build-model: build the Q-network named in params and save its initial weights."""

import io
from pathlib import Path

from invaders import files
from invaders.config import as_flat_dict
from invaders.envs.atari import num_actions, observation_shape
from invaders.models.networks import NetworkSpec, build_q_network, forward_flops, parameter_count, save_weights
from invaders.names import Metric
from invaders.pipeline import run_stage

OUTPUT = Path("models/initial")
METRICS = Path("results/build-model/metrics.json")


def build_model(params, run) -> None:
    import keras

    spec = NetworkSpec(
        params.model.network, params.model.dueling, observation_shape(params.env), num_actions(params.env)
    )
    run.log_params(
        {**as_flat_dict(params.model, "model"), "input_shape": spec.input_shape, "num_actions": spec.num_actions}
    )
    keras.utils.set_random_seed(params.model.seed)
    model = build_q_network(spec)
    summary = io.StringIO()
    model.summary(print_fn=lambda line, **_: summary.write(line + "\n"))
    metrics = {Metric.PARAMETERS: parameter_count(model), Metric.FORWARD_MFLOPS: forward_flops(model) / 1e6}
    with files.atomic_directory(OUTPUT) as staging:
        save_weights(model, spec, staging)
        (staging / "summary.txt").write_text(summary.getvalue())
    files.write_json(METRICS, metrics)
    run.log_metrics(metrics)
    run.log_artifact(OUTPUT, "model")
    print(summary.getvalue())


if __name__ == "__main__":
    run_stage("build-model", build_model)
