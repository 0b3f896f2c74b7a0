"""`python -m moirai_ft.evaluate <job_dir> [overrides]`: re-score a finished job (moirai_ft/evaluation/evaluate.py)."""

import sys

from moirai_ft.evaluation.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
