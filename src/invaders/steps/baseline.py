"""What the baseline stage does: a uniformly random agent plays the evaluation protocol."""

from __future__ import annotations

import numpy as np

from invaders.config import Params
from invaders.evaluation.publish import protocol_params, publish_scores, score_line
from invaders.names import Tag
from invaders.pipeline import Step, Workspace
from invaders.repository import provenance
from invaders.tracking.run import Run


def baseline(params: Params, run: Run, workspace: Workspace) -> dict[str, float]:
    """A uniformly random agent plays the evaluation protocol."""
    from invaders.envs.atari import make_vector_env
    from invaders.evaluation.protocol import play_episodes

    evaluation = params.evaluation
    run.log_params({**protocol_params(params), "agent": "random"})
    run.set_tags({Tag.AGENT: "random"})
    env = make_vector_env(params.env, min(evaluation.num_envs, evaluation.episodes))
    first_seed = evaluation.first_seed(evaluation.split)
    rng = np.random.default_rng(first_seed)
    num_actions = int(env.single_action_space.n)

    def random_actions(observations):
        return rng.integers(0, num_actions, len(observations)).astype(np.int32)

    episodes = play_episodes(env, random_actions, evaluation.episodes, first_seed)
    random_agent = {"agent": "random", "train_steps": 0, "train_wall_time_s": 0.0, **provenance()}
    summary = publish_scores(episodes, workspace.baseline_results, run, params, 1.0, random_agent)
    print(score_line("random agent", summary))
    return summary


BASELINE = Step("baseline", baseline)
