"""`python -m moirai_ft.evaluate <job_dir> [overrides]`: re-score a finished job (moirai_ft/evaluation/reevaluate.py)."""

import sys

from moirai_ft.errors import UserError

try:  # first: the uni2ts and Lightning versions moirai-ft was written for, one line if another is installed
    from moirai_ft.model import compat  # noqa: F401
except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)

from moirai_ft.evaluation.reevaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
