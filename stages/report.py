"""Stage report: compare the agents the evaluation stages wrote, from their files, the stage's DVC deps
(``invaders.steps.report.report``). Every evaluation in MLflow: python -m invaders.reporting.compare."""

from invaders.pipeline import run_stage
from invaders.steps.report import REPORT

if __name__ == "__main__":
    run_stage(REPORT)
