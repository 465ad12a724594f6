"""Stable-Baselines3's DQN on the peer benchmark's settings; prints one JSON line. Runs in .venv-peers.

    .venv-peers/bin/python benchmarks/peers_sb3.py --envs 4 --steps 4000

Nature CNN (``CnnPolicy``), batch 32, one gradient update per 4 agent steps, 84x84 grayscale, 4 stacked
frames, ``ALE/SpaceInvaders-v5`` with sticky actions. The game is made with ``frameskip=1`` because SB3's
``AtariWrapper`` skips 4 frames itself: on v5's own frame skip the agent would act every 16 frames.
Timed from ``--settle`` agent steps after the warm-up (``learning_starts``) to the end of ``learn``.
Needs only SB3, torch, gymnasium and ale-py: never the project's packages.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ALE/SpaceInvaders-v5")
    parser.add_argument("--envs", type=int, default=1, choices=(1, 2, 4, 8), help="games stepped together")
    parser.add_argument("--warmup", type=int, default=1_000, help="agent steps of random play before updates")
    parser.add_argument("--settle", type=int, default=500, help="agent steps of training before the clock starts")
    parser.add_argument("--steps", type=int, default=4_000, help="agent steps timed")
    parser.add_argument("--buffer", type=int, default=10_000, help="replay capacity (transitions, all envs)")
    parser.add_argument("--threads", type=int, default=0, help="torch's intra-op threads (0: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import ale_py
    import gymnasium as gym
    import stable_baselines3
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_atari_env
    from stable_baselines3.common.vec_env import VecFrameStack

    class Clock(BaseCallback):
        """Time, agent steps and updates at the first vector step at or after ``start_at`` agent steps."""

        def __init__(self, start_at: int):
            super().__init__()
            self.start_at, self.mark = start_at, None

        def _on_step(self) -> bool:
            if self.mark is None and self.num_timesteps >= self.start_at:
                self.mark = (time.perf_counter(), self.num_timesteps, self.model._n_updates)
            return True

    if args.threads:
        torch.set_num_threads(args.threads)
    gym.register_envs(ale_py)
    env = VecFrameStack(
        make_atari_env(args.env, n_envs=args.envs, seed=args.seed, env_kwargs={"frameskip": 1}), n_stack=4
    )
    # train_freq counts vector steps of all envs: 1 env trains every 4th, 4 envs at each, 8 envs twice.
    model = DQN(
        "CnnPolicy",
        env,
        buffer_size=args.buffer,
        learning_starts=args.warmup,
        batch_size=32,
        train_freq=max(1, 4 // args.envs),
        gradient_steps=max(1, args.envs // 4),
        device="cpu",
        seed=args.seed,
        verbose=0,
    )
    clock = Clock(args.warmup + args.settle)
    model.learn(total_timesteps=args.warmup + args.settle + args.steps, callback=clock)
    end = time.perf_counter()
    env.close()
    start, start_step, start_updates = clock.mark
    steps, updates = model.num_timesteps - start_step, model._n_updates - start_updates
    figures = {
        "library": "stable-baselines3",
        "version": stable_baselines3.__version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "threads_set": bool(args.threads),
        "envs": args.envs,
        "steps": steps,
        "updates": updates,
        "seconds": end - start,
        "steps_per_s": steps / (end - start),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
