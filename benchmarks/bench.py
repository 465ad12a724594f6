"""Benchmark of the native DQN on this machine: prints the figures, asserts nothing.

    make bench                       # default Atari setup from params.yaml
    python benchmarks/bench.py --capacity 1000000 --train-steps 4000
    python benchmarks/bench.py --capacity 10000 --train-steps 500 --kerasrl-steps 0   # a short run

Figures: agent steps/s end to end (training at params' replay ratio and batch), ms per compiled update,
ms per update of the network with each head (plain, dueling-shared, dueling-streams), ms per batched
action, ms per replay sample, the environment's cost, the share of each in one vector
step, how much the loop adds on top of the bare update, peak RSS with a full replay memory of the
capacity reported, and the fraction of the CPU's fp32 peak that an update reaches.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from invaders.config import load_params  # noqa: E402

# What keeps every math library of both sides of a benchmark below AVX-512, to measure an AVX2-only CPU on an
# AVX-512 one: oneDNN (TensorFlow's and PyTorch's kernels), XLA, PyTorch's own kernels, MKL, numpy, OpenCV.
INSTRUCTION_SET_CAPS = {
    "native": {},
    "avx2": {
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
        "OPENCV_CPU_DISABLE": "AVX512F",
    },
}


def add_max_isa_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-isa",
        choices=sorted(INSTRUCTION_SET_CAPS),
        default="native",
        help="avx2: run as on an AVX2-only CPU (every math library capped below AVX-512)",
    )


def add_output_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the printed figures to FILE as a Markdown table"
    )


class Printed:
    """What a benchmark prints, line by line, kept so that ``--output FILE`` writes the same figures as a
    Markdown table (one row per line: the text before its first colon, the rest) for the docs to link."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "", **kwargs) -> None:
        print(text, **kwargs)
        self.lines.append(text)

    def markdown(self, title: str) -> str:
        def cell(text: str) -> str:
            return text.strip().replace("|", "\\|")

        command = " ".join(["python", *sys.argv])
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        rows = [
            f"| {cell(figure)} | {cell(value)} |" for figure, _, value in (line.partition(":") for line in self.lines)
        ]
        header = [f"# {title}", "", f"Written by `{command}` on {when}: every row is a line it printed.", ""]
        return "\n".join([*header, "| figure | value |", "|---|---|", *rows]) + "\n"

    def write(self, path: Path | None, title: str) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.markdown(title))
            print(f"figures written to {path}")


def apply_max_isa(max_isa: str) -> None:
    """Run this script again under the cap's variables unless they are set: numpy and the math libraries read
    them when they load, and the peers' processes inherit them."""
    caps = INSTRUCTION_SET_CAPS[max_isa]
    if all(os.environ.get(name) == value for name, value in caps.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **caps})


def timed(function, repeats: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is in KiB


def _fill_replay(capacity: int, envs: int, shape: tuple[int, ...], n_step: int, gamma: float, queue) -> None:
    from invaders.replay.frame_replay import FrameReplay

    replay = FrameReplay(capacity, envs, shape[1:], shape[0], n_step, gamma)
    frames = np.random.default_rng(0).integers(0, 255, (envs,) + shape[1:], dtype=np.uint8)
    zeros = np.zeros(envs)
    flags = np.zeros(envs, dtype=bool)
    for _ in range(replay.capacity_per_env):
        replay.add(frames, zeros, zeros, flags, flags, flags)
    replay.sample(32, np.random.default_rng(0))
    queue.put({"total_gb": replay.nbytes / 1e9, "peak_rss_gb": peak_rss_gb()})


def replay_memory_figures(capacity: int, envs: int, shape: tuple[int, ...], n_step: int, gamma: float) -> dict:
    """Fill a replay memory of ``capacity`` in a fresh process (no TensorFlow) and read its peak RSS."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_fill_replay, args=(capacity, envs, shape, n_step, gamma, queue))
    process.start()
    figures = queue.get()
    process.join()
    return {**figures, "frame_gb": capacity * int(np.prod(shape[1:])) / 1e9}


def kerasrl_steps_per_second(params, spec, steps: int) -> float:
    """keras-rl2's DQNAgent on the same setup (network, batch, replay ratio), after its warm-up."""
    import tempfile

    from invaders.agents.kerasrl_backend import train as train_kerasrl
    from invaders.backends import TrainingJob
    from invaders.models.networks import build_q_network, save_weights

    train = dataclasses.replace(
        params.train,
        backend="keras-rl2",
        steps=params.train.warmup_steps + steps,
        log_interval=params.train.warmup_steps,
    )
    with tempfile.TemporaryDirectory() as initial:
        save_weights(build_q_network(spec), spec, Path(initial))
        job = TrainingJob(
            dataclasses.replace(params, train=train), Path(initial), lambda m, s: None, show_progress=False
        )
        result = train_kerasrl(job).result
    rows = result.curve  # one row per warm-up length: the first closes the warm-up
    seconds = sum((b["step"] - a["step"]) / b["train/steps_per_second"] for a, b in zip(rows, rows[1:]))
    return (rows[-1]["step"] - rows[0]["step"]) / seconds


def benchmark_params(path: str):
    """params.yaml at the 2015 DQN's work per step: one update every 4 agent steps, batch 32."""
    params = load_params(path)
    return dataclasses.replace(params, train=dataclasses.replace(params.train, replay_ratio=0.25, batch_size=32))


def end_to_end(params, initial: Path, train_steps: int, settle_steps: int = 0) -> dict:
    """The real training loop: agent steps/s from ``settle_steps`` after the warm-up to the end.

    Timed from the first metrics row at or after warm-up + ``settle_steps`` (its ``log_interval``), so the
    first update's compilation falls inside the window unless ``settle_steps`` covers it.
    """
    from invaders.agents.native_backend import build_trainer

    config = params.train
    start_at = config.warmup_steps + settle_steps
    total = start_at + train_steps  # the warm-up is a share of the budget: keep its length in agent steps
    run_params = dataclasses.replace(
        params,
        train=dataclasses.replace(
            config, steps=total, warmup_fraction=config.warmup_steps / total, log_interval=start_at
        ),
    )
    timings = {}

    def on_metrics(metrics, step):
        if step >= start_at and "start" not in timings:
            timings["start"], timings["step"], timings["updates"] = time.perf_counter(), step, trainer.learner.updates

    trainer, _ = build_trainer(run_params, initial, on_metrics)
    result = trainer.run(show_progress=False)
    end = time.perf_counter()
    trainer.env.close()
    steps, seconds = result.steps - timings["step"], end - timings["start"]
    return {
        "steps": steps,
        "seconds": seconds,
        "updates": result.updates - timings["updates"],
        "steps_per_s": steps / seconds,
    }


def update_paths(params, spec, batches, observations) -> dict[str, tuple[float, float]]:
    """Seconds per update and per batched action of each way to compute them, on the same batches."""
    from invaders.agents.dqn import DQNLearner
    from invaders.hardware import has_native_bf16
    from invaders.models.networks import build_q_network

    paths = {"float32, XLA": ("float32", True), "float32, TF kernels (oneDNN)": ("float32", False)}
    if has_native_bf16():  # emulated bf16 takes minutes here and is never chosen
        paths["bfloat16, TF kernels (oneDNN)"] = ("bfloat16", False)
    figures = {}
    for label, (precision, xla) in paths.items():
        networks = [build_q_network(spec, precision=precision) for _ in range(2)]
        learner = DQNLearner(*networks, params.train, precision, xla)
        update_s = timed(lambda learner=learner: learner.update(next(batches)), repeats=60, warmup=5)
        act_s = timed(lambda learner=learner: learner.greedy_actions(observations), repeats=200)
        figures[label] = (update_s, act_s)
    return figures


def head_update_costs(params, spec, batches, rounds: int = 5) -> dict[str, tuple[float, int, float]]:
    """Per head of ``spec``'s network: seconds per float32 update (as training compiles it, on the same
    batches), parameters and forward FLOPs. The heads take turns, ``rounds`` times, so a load that comes
    and goes on a shared machine falls on each of them."""
    from invaders.agents.dqn import DQNLearner
    from invaders.models.networks import HEADS, build_q_network, forward_flops, parameter_count

    learners = {}
    for head in HEADS:
        with_head = dataclasses.replace(spec, dueling=head != "plain", head=head)
        learners[head] = DQNLearner(build_q_network(with_head), build_q_network(with_head), params.train)
    samples = {head: [] for head in HEADS}
    for _ in range(rounds):
        for head, learner in learners.items():
            samples[head].append(timed(lambda learner=learner: learner.update(next(batches)), repeats=20, warmup=5))
    return {
        head: (float(np.median(samples[head])), parameter_count(learner.online), forward_flops(learner.online))
        for head, learner in learners.items()
    }


def matmul_peak_gflops() -> float:
    import tensorflow as tf

    size = 2048
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.linalg.matmul(a, b))
    seconds = timed(lambda: matmul().numpy(), repeats=10)
    return 2 * size**3 / seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument(
        "--train-steps", type=int, default=4_000, help="agent steps of the end-to-end run after warm-up"
    )
    parser.add_argument("--capacity", type=int, default=1_000_000, help="replay capacity filled for the memory figure")
    parser.add_argument(
        "--kerasrl-steps",
        type=int,
        default=1_500,
        help="agent steps after warm-up for keras-rl2 on the same setup (0: skip)",
    )
    add_max_isa_argument(parser)
    add_output_argument(parser)
    args = parser.parse_args()
    apply_max_isa(args.max_isa)
    say = Printed()

    from invaders.agents.native_backend import build_trainer
    from invaders.envs.atari import num_actions, observation_shape
    from invaders.hardware import cpu_description, learner_precision
    from invaders.models.networks import NetworkSpec, build_q_network, forward_flops, save_weights

    # The speed figures are for the 2015 DQN's work per step: one update every 4 agent steps, batch 32.
    params = benchmark_params(args.params)
    config = params.train
    spec = NetworkSpec(
        params.model.network, params.model.dueling, observation_shape(params.env), num_actions(params.env)
    )
    envs = config.num_envs
    say(
        f"setup: {params.env.id}, {spec.network} network, {spec.head} head, batch {config.batch_size}, "
        f"replay ratio {config.replay_ratio}, {envs} envs, double DQN {config.double_dqn}, n-step {config.n_step}, "
        f"precision {config.precision} = {learner_precision(config.precision)} here"
    )
    say(f"CPU: {cpu_description()}")
    initial = Path(tempfile.mkdtemp(prefix="invaders-bench-"))
    save_weights(build_q_network(spec), spec, initial)

    # Components, each alone, wired by the same builder as training.
    trainer, _ = build_trainer(params, initial, lambda metrics, step: None)
    env, learner, replay, rng = trainer.env, trainer.learner, trainer.replay, np.random.default_rng(0)
    observations, _ = env.reset(seed=0)
    random_actions = lambda: rng.integers(0, spec.num_actions, envs).astype(np.int32)  # noqa: E731
    env_s = timed(lambda: env.step(random_actions()), repeats=300)
    act_s = timed(lambda: learner.greedy_actions(observations), repeats=300)
    for step in range(20_000 // envs):
        observations, rewards, terminated, truncated, _ = env.step(random_actions())
        replay.add(
            observations[:, -1],
            random_actions(),
            np.sign(rewards),
            terminated,
            np.zeros(envs, bool),
            np.zeros(envs, bool) if step else np.ones(envs, bool),
        )
    sample_s = timed(lambda: replay.sample(config.batch_size, rng), repeats=300)
    # Fresh batches, as in training: one batch reused stays in the CPU caches and flatters the update.
    batches = itertools.cycle([replay.sample(config.batch_size, rng) for _ in range(64)])
    update_s = timed(lambda: learner.update(next(batches)), repeats=100, warmup=5)
    online = learner.online
    paths = update_paths(params, spec, batches, observations)
    heads = head_update_costs(params, spec, batches)

    # End to end: the real training loop, timed from 500 steps after the warm-up (the first updates compile).
    run = end_to_end(params, initial, args.train_steps, settle_steps=500)
    shutil.rmtree(initial)
    steps, seconds, updates, steps_per_s = run["steps"], run["seconds"], run["updates"], run["steps_per_s"]

    per_vector_step = {
        "env": env_s,
        "act": act_s,
        "sample": sample_s * config.replay_ratio * envs,
        "update": update_s * config.replay_ratio * envs,
    }
    serial = sum(per_vector_step.values())
    measured = seconds / (steps / envs)
    update_flops = forward_flops(online) * config.batch_size * (3 + 1 + (1 if config.double_dqn else 0))
    peak = matmul_peak_gflops()

    kerasrl = kerasrl_steps_per_second(params, spec, args.kerasrl_steps) if args.kerasrl_steps else None
    memory = replay_memory_figures(args.capacity, envs, spec.input_shape, config.n_step, config.gamma)
    training_rss = peak_rss_gb()

    say(
        f"agent steps/s, training end to end:     {steps_per_s:8.1f}   ({steps} steps, {updates} updates, {seconds:.1f} s)"
    )
    say(f"  1M agent steps would take:            {1e6 / steps_per_s / 3600:8.2f} h")
    if kerasrl:
        say(
            f"keras-rl2 DQNAgent, same setup, agent steps/s: {kerasrl:8.1f}   ({1e3 / kerasrl:.1f} ms per agent step;"
            f" native {1e3 / steps_per_s:.1f} ms)"
        )
    say(f"ms per compiled update (bare):          {update_s * 1e3:8.2f}")
    for label, (path_update_s, path_act_s) in paths.items():
        say(f"  {label + ':':<36} {path_update_s * 1e3:8.2f}   (action {path_act_s * 1e3:.2f} ms)")
    say("ms per update by head (float32):")
    for head, (head_update_s, parameters, flops) in heads.items():
        mark = " (this setup's)" if head == spec.head else ""
        say(
            f"  {head + ':':<36} {head_update_s * 1e3:8.2f}   ({parameters:,} parameters, "
            f"{flops / 1e6:.1f} MFLOP forward){mark}"
        )
    say(f"ms per batched action ({envs} games):        {act_s * 1e3:8.2f}")
    say(f"ms per replay sample (batch {config.batch_size}):        {sample_s * 1e3:8.2f}")
    say(f"ms per vector step of the env ({envs} games): {env_s * 1e3:8.2f}   ({envs / env_s:.0f} agent steps/s alone)")
    say(
        f"ms per vector step, measured in the loop: {measured * 1e3:6.2f}   (serial sum of parts {serial * 1e3:.2f};"
        " the replay samples while the emulators step; the update call also acts)"
    )
    for name, value in per_vector_step.items():
        say(f"  share {name:<7}                         {value / serial:8.1%}")
    bare_update_time = update_s * updates
    say(f"loop cost on top of the bare updates:   {seconds / bare_update_time - 1:8.1%}")
    say(f"GFLOP per update (analytic):            {update_flops / 1e9:8.2f}")
    say(f"fp32 matmul peak measured (GFLOP/s):    {peak:8.1f}")
    say(f"update reaches of that peak:            {update_flops / update_s / 1e9 / peak:8.1%}")
    say(
        f"replay capacity {args.capacity:,}: frames {memory['frame_gb']:.2f} GB, all fields {memory['total_gb']:.2f} GB "
        f"({memory['total_gb'] / memory['frame_gb']:.3f} x C x 84 x 84)"
    )
    say(f"peak RSS, process holding only that memory, full: {memory['peak_rss_gb']:.2f} GB")
    say(f"peak RSS of this training process (TensorFlow, 100k-capacity replay partly written): {training_rss:.2f} GB")
    say.write(args.output, "make bench: the native DQN on this machine")


if __name__ == "__main__":
    main()
