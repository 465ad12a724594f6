"""Stage evaluate: an agent plays the evaluation protocol, exactly like the random baseline
(``invaders.stages.evaluate.evaluate``).

    python stages/evaluate.py                                   # the agent the train stage just made
    python stages/evaluate.py --agent shipped/NAME --output results/shipped/NAME   # a shipped agent
"""

import argparse
from pathlib import Path

from invaders.pipeline import run_stage
from invaders.stages.evaluate import EVALUATE, evaluate_shipped

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Evaluate an agent under the project's protocol.")
    parser.add_argument("--agent", type=Path, help="a shipped agent's folder (weights.npz, spec.json, agent.json)")
    parser.add_argument("--output", type=Path, help="folder for its metrics.json, episodes.csv, episode.gif")
    arguments = parser.parse_args()
    if bool(arguments.agent) != bool(arguments.output):
        parser.error("--agent and --output go together")
    run_stage(evaluate_shipped(arguments.agent, arguments.output) if arguments.agent else EVALUATE)
