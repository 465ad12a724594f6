"""This project's training speed against Stable-Baselines3's DQN, same settings, same CPU, back to back.

    make bench-peers                             # ~5 minutes: 3,000 agent steps timed for each
    make bench-peers ARGS="--steps 20000"        # longer
    make bench-peers ARGS="--max-isa avx2"       # as on an AVX2-only CPU, on an AVX-512 one
    python benchmarks/peers.py --peers-python .venv-peers/bin/python

Settings of both: ``ALE/SpaceInvaders-v5`` (sticky actions, the agent acts every 4 frames), 84x84x4
grayscale, one gradient update per 4 agent steps, batch 32, a 1,000-step warm-up of random play, then
``--settle`` steps of training not timed (the first updates compile), then ``--steps`` timed. This project:
params.yaml's network and learner (Double DQN, dueling, 3-step returns, 4 games) through the training loop
of ``build_trainer``. SB3: plain DQN with ``CnnPolicy`` (Nature CNN), with 1 and with 4 envs, each with
torch's default threads (all cores) and with 1 thread (which wins when other jobs share the cores), run by
benchmarks/peers_sb3.py in its own venv (.venv-peers, made by the Makefile). Prints agent steps/s of
each, the ratio of this project to SB3's best, the CPU and the load average it ran under.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import Printed, add_max_isa_argument, add_output_argument, apply_max_isa, benchmark_params, end_to_end

from invaders.hardware import cpu_description, usable_cpus  # importable once bench put src/ on the path

ROOT = Path(__file__).resolve().parents[1]


def project_figures(params_path: str, warmup: int, settle: int, steps: int) -> dict:
    import dataclasses

    from invaders.envs.atari import num_actions, observation_shape
    from invaders.models.networks import NetworkSpec, build_q_network, save_weights

    params = benchmark_params(params_path)
    params = dataclasses.replace(
        params, train=dataclasses.replace(params.train, steps=2 * warmup, warmup_fraction=0.5)
    )  # warm-up: warmup steps
    spec = NetworkSpec(
        params.model.network, params.model.dueling, observation_shape(params.env), num_actions(params.env)
    )
    with tempfile.TemporaryDirectory(prefix="invaders-peers-") as initial:
        save_weights(build_q_network(spec), spec, Path(initial))
        figures = end_to_end(params, Path(initial), steps, settle)
    config = params.train
    label = (
        f"{spec.network}{' dueling' if spec.dueling else ''}{', Double DQN' if config.double_dqn else ''}, "
        f"{config.n_step}-step, {config.num_envs} envs"
    )
    return {**figures, "label": label, "env": params.env.id}


def sb3_figures(
    python: str, env: str, envs: int, threads: int, warmup: int, settle: int, steps: int, timeout: float
) -> dict:
    """peers_sb3.py in the peers venv; raises RuntimeError with a one-line reason."""
    command = [
        python,
        str(ROOT / "benchmarks" / "peers_sb3.py"),
        "--env",
        env,
        "--envs",
        str(envs),
        "--threads",
        str(threads),
    ]
    command += ["--warmup", str(warmup), "--settle", str(settle), "--steps", str(steps)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"stopped after {timeout:.0f} s (--sb3-timeout; a busy machine?)") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"peers_sb3.py --envs {envs} --threads {threads} failed (exit {done.returncode}): {last}")
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--steps", type=int, default=3_000, help="agent steps timed for each")
    parser.add_argument("--warmup", type=int, default=1_000, help="agent steps of random play before updates")
    parser.add_argument("--settle", type=int, default=500, help="agent steps of training before the clock starts")
    parser.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--sb3-envs", type=int, nargs="+", default=[1, 4], help="SB3's env counts")
    parser.add_argument(
        "--sb3-threads",
        type=int,
        nargs="+",
        default=[0, 1],
        help="torch threads for each SB3 env count (0: torch's default, all cores); 1 thread wins on a busy machine",
    )
    parser.add_argument("--sb3-timeout", type=float, default=600, help="seconds before an SB3 run is given up")
    add_max_isa_argument(parser)
    add_output_argument(parser)
    args = parser.parse_args()
    apply_max_isa(args.max_isa)
    say = Printed()
    try:
        return measure(args, say)
    finally:
        say.write(args.output, "make bench-peers: this project's training speed against Stable-Baselines3's DQN")


def measure(args: argparse.Namespace, say: Printed) -> int:
    """Run the measurements, printing each figure through ``say``; the exit code."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    say(f"CPU: {cpu_description()}")
    busy = (
        " - the machine is busy: the figures are skewed, most against torch's spinning threads"
        if load > usable_cpus() / 2
        else ""
    )
    say(f"load average (1 min) at start: {load:.2f}{busy}")
    say(
        f"settings: one update per 4 agent steps, batch 32, 84x84x4; warm-up {args.warmup:,}, "
        f"{args.settle:,} untimed, {args.steps:,} agent steps timed for each",
        flush=True,
    )
    project = project_figures(args.params, args.warmup, args.settle, args.steps)
    say(
        f"this project ({project['env']}, {project['label']}): {project['steps_per_s']:8.1f} agent steps/s"
        f"   ({project['steps']} steps, {project['updates']} updates, {project['seconds']:.1f} s)",
        flush=True,
    )
    if not Path(args.peers_python).exists():
        say(f"SB3 DQN: not measured: no {args.peers_python} (`make bench-peers` creates .venv-peers)")
        return 1
    peers, failures = [], []
    for envs, threads in itertools.product(args.sb3_envs, args.sb3_threads):
        try:
            peer = sb3_figures(
                args.peers_python, project["env"], envs, threads, args.warmup, args.settle, args.steps, args.sb3_timeout
            )
        except RuntimeError as error:
            failures.append(str(error))
            say(f"SB3 DQN, {plural(envs, 'env')}: not measured: {error}", flush=True)
            continue
        peers.append(peer)
        say(
            f"SB3 {peer['version']} DQN (CnnPolicy, torch {peer['torch']}), {sb3_label(peer)}: "
            f"{peer['steps_per_s']:8.1f} agent steps/s"
            f"   ({peer['steps']} steps, {peer['updates']} updates, {peer['seconds']:.1f} s)",
            flush=True,
        )
    if peers:
        best = max(peers, key=lambda peer: peer["steps_per_s"])
        say(f"ratio this project / SB3's best ({sb3_label(best)}): {project['steps_per_s'] / best['steps_per_s']:.2f}x")
    return 1 if failures else 0


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'s' if count != 1 else ''}"


def sb3_label(peer: dict) -> str:
    default = "" if peer["threads_set"] else " (torch's default)"
    return f"{plural(peer['envs'], 'env')}, {plural(peer['torch_threads'], 'thread')}{default}"


if __name__ == "__main__":
    sys.exit(main())
