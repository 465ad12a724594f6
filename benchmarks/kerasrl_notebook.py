"""Where a step of the notebook preset's keras-rl2 run goes: `python benchmarks/kerasrl_notebook.py --steps 1300`.

Runs the keras-rl2 backend's own training function (``_train_in_child``: keras-rl2's ``DQNAgent.fit``)
in this process on the Makefile's ``NOTEBOOK`` overrides, with timers around the parts of a step:
the environment, replay sampling, state batching, the target network's predict, the action's predict
and the train function. Prints steps/s after the warm-up and each part's ms per update.
Thread count: set TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS in the environment.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def notebook_overrides(steps: int) -> dict[str, str]:
    """The Makefile's NOTEBOOK `-S key=value` overrides, with train.steps = ``steps``."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ")
    line = next(row for row in text.splitlines() if row.startswith("NOTEBOOK ="))
    values = dict(re.findall(r"-S (\S+?)=(\S+)", line))
    values["train.steps"] = str(steps)
    return values


def params_for(steps: int, extra: dict[str, str]):
    """params.yaml with the notebook's overrides and ``extra``, each value read as `-S` reads it."""
    from invaders.config import parse_value
    from invaders.experiment import params_with

    overrides = {key: parse_value(value) for key, value in {**notebook_overrides(steps), **extra}.items()}
    return params_with(overrides, ROOT / "params.yaml")


def make_initial(params, directory: Path) -> None:
    """The build-model stage's network (Keras 3) in ``directory``, made in a child process."""
    code = (
        "import sys, json; from pathlib import Path; import keras;"
        "from invaders.models.networks import NetworkSpec, build_q_network, save_weights;"
        "spec = NetworkSpec.from_json(sys.argv[1]); keras.utils.set_random_seed(0);"
        "save_weights(build_q_network(spec), spec, Path(sys.argv[2]))"
    )
    from invaders.envs.atari import num_actions, observation_shape
    from invaders.models.networks import NetworkSpec

    spec = NetworkSpec("notebook", params.model.dueling, observation_shape(params.env), num_actions(params.env))
    subprocess.run([sys.executable, "-c", code, spec.to_json(), str(directory)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1300)
    parser.add_argument("--initial", type=Path, default=Path(tempfile.gettempdir()) / "invaders-notebook-initial")
    parser.add_argument("--profile", type=Path, help="also write a cProfile of the run here")
    parser.add_argument(
        "--no-target-cache", action="store_true", help="without the backend's target Q cache (the speed-up's baseline)"
    )
    parser.add_argument("-S", dest="extra", action="append", default=[], help="another key=value override")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.extra)
    params = params_for(args.steps, extra)
    if not (args.initial / "weights.npz").exists():
        make_initial(params, args.initial)

    from invaders.agents import kerasrl_backend, kerasrl_compat

    kerasrl_compat.apply()
    if args.no_target_cache:
        kerasrl_compat.cache_target_q = lambda agent: None
    import rl.agents.dqn
    import rl.memory

    totals = collections.defaultdict(float)
    counts = collections.Counter()
    clock = {"first_update": None}

    def timed(owner, name, label=None):
        original = getattr(owner, name)

        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                key = label(a, k) if callable(label) else (label or name)
                totals[key] += time.perf_counter() - started
                counts[key] += 1

        setattr(owner, name, wrapper)

    def predict_label(a, k):
        return f"predict batch {len(a[1])}"

    def train_label(a, k):
        if clock["first_update"] is None:
            clock["first_update"] = time.perf_counter()
        return "train_on_batch"

    timed(rl.memory.SequentialMemory, "sample")
    timed(rl.agents.dqn.AbstractDQNAgent, "process_state_batch")
    timed(kerasrl_compat.GymnasiumAdapter, "step", "env.step")
    # In graph mode tf_keras builds its models from training_v1.Model, which has its own methods.
    from tf_keras.src.engine import training_v1

    timed(training_v1.Model, "predict_on_batch", predict_label)
    timed(training_v1.Model, "train_on_batch", train_label)

    messages = []
    with tempfile.TemporaryDirectory() as output:
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        started = time.perf_counter()
        done = kerasrl_backend._train_in_child(params, args.initial, Path(output), False, messages.append)
        ended = time.perf_counter()
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile)
    updates = counts["train_on_batch"]
    after = ended - clock["first_update"] if clock["first_update"] else float("nan")
    print(json.dumps({"steps": done["steps"], "updates": updates, "wall_s": round(ended - started, 1)}))
    print(f"after warm-up: {updates / after:.3f} updates/s, {1000 * after / max(updates, 1):.0f} ms per update-step")
    for key in sorted(totals, key=totals.get, reverse=True):
        per = 1000 * totals[key] / max(updates, 1)
        print(f"  {key:24s} {counts[key]:6d} calls {totals[key]:8.1f} s  {per:7.1f} ms per update")


if __name__ == "__main__":
    main()
