"""What the build-model stage does: build the Q-network named in params and save its initial weights."""

from __future__ import annotations

import io

from invaders import files
from invaders.config import Params, as_flat_dict
from invaders.names import Metric
from invaders.pipeline import Step, Workspace
from invaders.seeding import run_seeds
from invaders.tracking.run import Run


def build_model(params: Params, run: Run, workspace: Workspace) -> dict[str, float]:
    """Build the Q-network named in params and save its initial weights."""
    import keras

    from invaders.envs.atari import num_actions, observation_shape
    from invaders.models.networks import NetworkSpec, build_q_network, forward_flops, parameter_count, save_weights

    model_config = params.model
    spec = NetworkSpec(
        model_config.network,
        model_config.dueling,
        observation_shape(params.env),
        num_actions(params.env),
        quantiles=model_config.quantiles,
    )
    run.log_params(
        {
            **as_flat_dict(params.model, "model"),
            "train.seed": params.train.seed,
            "input_shape": spec.input_shape,
            "num_actions": spec.num_actions,
        }
    )
    keras.utils.set_random_seed(run_seeds(params.train.seed).weights)
    model = build_q_network(spec)
    summary = io.StringIO()
    model.summary(print_fn=lambda line, **_: summary.write(line + "\n"))
    metrics = {Metric.PARAMETERS: parameter_count(model), Metric.FORWARD_MFLOPS: forward_flops(model) / 1e6}
    with files.atomic_directory(workspace.initial) as staging:
        save_weights(model, spec, staging)
        (staging / "summary.txt").write_text(summary.getvalue())
    files.write_json(workspace.build_metrics, metrics)
    run.log_metrics(metrics)
    run.log_artifact(workspace.initial, "model")
    print(summary.getvalue())
    return metrics


BUILD_MODEL = Step("build-model", build_model)
