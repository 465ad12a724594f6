"""Stage evaluate: an agent plays the evaluation protocol, exactly like the random baseline
(``invaders.steps.evaluate.evaluate``).

    python stages/evaluate.py                                   # the agent the train stage just made
    python stages/evaluate.py --agent shipped/NAME --output results/shipped/NAME   # a shipped agent
    python stages/evaluate.py --agent models:/space-invaders-dqn@champion --output results/champion
"""

import argparse
from pathlib import Path

from invaders.pipeline import exit_on_user_error, run_stage
from invaders.steps.evaluate import EVALUATE, evaluate_shipped

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Evaluate an agent under the project's protocol.")
    parser.add_argument(
        "--agent",
        help="a shipped agent's folder (weights.npz, spec.json, agent.json) or a model URI (models:/, runs:/)",
    )
    parser.add_argument("--output", type=Path, help="folder for its metrics.json, episodes.csv, episode.gif")
    arguments = parser.parse_args()
    if bool(arguments.agent) != bool(arguments.output):
        parser.error("--agent and --output go together")
    if arguments.agent and arguments.agent.startswith(("models:/", "runs:/")):
        from invaders.tracking.registry import check_agent_uri

        with exit_on_user_error("evaluate"):
            check_agent_uri(arguments.agent)  # one line before any work when it does not exist
        agent = arguments.agent
    else:
        agent = arguments.agent and Path(arguments.agent)
    run_stage(evaluate_shipped(agent, arguments.output) if agent else EVALUATE)
