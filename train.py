"""Fine-tune Moirai: `python train.py model=small pattern=freeze_ffn lr=1e-5`, or a grid with `-m`.

Composes conf/train.yaml, runs one job into Hydra's job directory, and returns the best validation
loss, the value a sweeper minimises.
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from pathlib import Path

# third-party deprecation noise (uni2ts registering resolvers under omegaconf 2.4, hydra's version_base
# conversion) would bury the one line a user needs to read
warnings.filterwarnings("ignore", message=".*register_new_resolver.*")
warnings.filterwarnings("ignore", category=FutureWarning, module=r"hydra\..*")

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from moirai_ft.budget.cli import before_hydra
from moirai_ft.console import quiet_third_party
from moirai_ft.config.precheck import check_command_line
from moirai_ft.config.store import register
from moirai_ft.errors import UserError
from moirai_ft.result import Status
from moirai_ft.sweep.hydra_callbacks import STATUS_FILE_ENV, exit_code
# torch-free at import; referenced in main, so a launcher's job process imports it (and naming.py's
# hydra.sweep.subdir resolver) before Hydra resolves the job's directory
from moirai_ft.sweep.runner import run_tracked


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    # here: torch loads only once the command line is checked
    from moirai_ft.instrument import faults
    from moirai_ft.train.outcome import objective

    # in every job's process (a launcher's too), now that the training modules are imported: Optuna's "Using an
    # existing study" lines of a job joining its sweep's study (moirai_ft/console.py)
    quiet_third_party()
    hc = HydraConfig.get()
    # lock + fingerprint; in a sweep, skips a completed twin or continues an unfinished one (moirai_ft/sweep/runner.py)
    try:
        metrics = run_tracked(
            cfg, hc.mode, Path(hc.runtime.output_dir), Path(hc.runtime.cwd), hc.runtime.choices.get("sweep"),
            extra_callbacks=faults.from_environment(),  # none, unless a reliability test armed one
        )
    except OSError as e:  # the disk filled or the directory went away: not even metrics.json could be written
        print(f"error: cannot write the job's files in {hc.runtime.output_dir} ({e.strerror or e}); "
              "free disk space or pass another hydra.run.dir / hydra.sweep.dir", file=sys.stderr)
        sys.exit(1)
    if metrics["status"] == Status.not_started.value:  # budget=: left out, not failed (moirai_ft/budget/clock.py)
        print(f"{Status.not_started.value}: {hc.runtime.output_dir}", file=sys.stderr)
    elif metrics["status"] not in ("completed", "pruned", "lr_find"):  # results too (moirai_ft/search/)
        print(f"error: {metrics.get('error', metrics['status'])}", file=sys.stderr)
        if hc.mode != RunMode.MULTIRUN:  # in a sweep the other jobs go on
            sys.exit(2 if metrics.get("error_type") == "config" else 1)
    return objective(metrics)


if __name__ == "__main__":
    quiet_third_party()  # Lightning's hints that do not apply to a job (moirai_ft/console.py)
    register()  # the schemas conf/train.yaml composes against (moirai_ft/config/store.py)
    # a wrong key, type or value: one line before any directory, data or model (moirai_ft/config/precheck.py)
    if message := check_command_line(sys.argv[1:], Path(__file__).parent / "conf"):
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    try:  # the uni2ts and Lightning versions moirai-ft was written for: one line if another is installed
        from moirai_ft.model import compat  # noqa: F401
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    # a sweep with a failed job ends non-zero, after all its jobs ran: the SweepStatus callback
    # (moirai_ft/sweep/hydra_callbacks.py) writes the sweep's exit status into the file named here
    with tempfile.TemporaryDirectory(prefix="moirai_ft_sweep_") as tmp:
        # plan=true: the plan printed, nothing run; budget=: the plan the sweep's jobs are started on
        try:
            code = before_hydra(sys.argv[1:], Path(__file__).parent / "conf", Path(tmp))
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            code = 2
        if code is not None:
            sys.exit(code)
        status_file = Path(tmp) / "sweep_status.json"
        # named in the environment, not as an override: conf/train.yaml reads it with oc.env, and the
        # command line (whose overrides must stay together for Hydra's argparse) stays the user's own
        os.environ[STATUS_FILE_ENV] = str(status_file)
        main()
        code = exit_code(status_file)
    sys.exit(code)
