"""Stage report: read every baseline and evaluation run back from MLflow and compare them
(``invaders.stages.report.report``)."""

from invaders.pipeline import run_stage
from invaders.stages.report import REPORT

if __name__ == "__main__":
    run_stage(REPORT)
