"""Stage report: compare the agents the evaluation stages wrote, from their files, the stage's DVC deps
(``invaders.stages.report.report``). Every evaluation in MLflow: python -m invaders.reporting.compare."""

from invaders.pipeline import run_stage
from invaders.stages.report import REPORT

if __name__ == "__main__":
    run_stage(REPORT)
