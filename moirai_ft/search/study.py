"""The Optuna study every job of a sweep shares: where it is stored, what it is called, and which trial
a job is. Used by the jobs (pruning) and by the hydra/sweeper=optuna plugin, in separate processes;
no torch here.

- Storage: `prune.storage` null -> Optuna's JournalStorage on the file <sweep_root>/optuna_journal.log
  (appends under a file lock: safe for concurrent processes on one machine or a shared file system);
  a path -> a journal file there; a URL with `://` -> Optuna's RDB storage (postgresql://, mysql://,
  sqlite:///) for a cluster.
- Name: `prune.study_name`, else derived from the sweep's command line (its overrides, sweep values
  included, Hydra's own settings left out), so rerunning the same command continues the same study.
- Trial: the optuna sweeper asks the study for trials and writes job number -> trial number into
  <sweep_dir>/optuna_trials.json before launching; a job of a plain `-m` grid asks for a trial itself.
- Pruner: the first sweep or job of a study records its pruner settings in the study; one with other settings
  is refused (`agree_on_pruner`), so every worker of a shared study (sweeps on several nodes) prunes alike.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from moirai_ft.artifacts import read_json, write_json_atomic
from moirai_ft.config.root import RUN_KEYS
from moirai_ft.errors import UserError, first_line

JOURNAL = "optuna_journal.log"
TRIALS = "optuna_trials.json"  # in the sweep directory: {"<hydra.job.num>": trial number}
PRUNER_ATTR = "pruner"  # study user attribute: the pruner settings its first sweep or job recorded
# the settings that make a pruner decide differently (conf/prune), by pruner
PRUNER_SETTINGS = {"none": (), "asha": ("min_resource", "reduction_factor"),
                   "hyperband": ("min_resource", "reduction_factor", "max_resource"),
                   "median": ("n_startup_trials", "n_warmup_steps")}


def storage_for(storage: str | None, sweep_root: str | Path, launch_dir: str | Path) -> optuna.storages.BaseStorage:
    """The study storage of a sweep (module doc)."""
    if storage and "://" in storage:
        try:
            return _rdb_storage(storage)
        except ImportError as e:  # SQLAlchemy found no driver for the URL's database
            extra = ' (pip install "moirai-ft[postgres]")' if storage.startswith("postgres") else ""
            raise UserError(f"prune.storage={storage.split('://')[0]}://... needs a database driver{extra}: "
                            f"{e.__cause__ or e}") from None
        except Exception as e:  # SQLAlchemy's OperationalError: no server there, a wrong password, no such database
            import sqlalchemy.exc

            if not isinstance(e, sqlalchemy.exc.OperationalError):
                raise
            shown = sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)
            reason = first_line(e.orig or e).removeprefix("connection failed: ")
            raise UserError(f"prune.storage={shown} cannot be opened ({reason}); start the database server or "
                            "correct the URL (user, password, host, port, database), or leave prune.storage unset "
                            "for a journal file under sweep_root") from None
    root = Path(sweep_root)
    path = Path(storage) if storage else (root if root.is_absolute() else Path(launch_dir) / root) / JOURNAL
    path = path if path.is_absolute() else Path(launch_dir) / path
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _rdb_storage(url: str, attempts: int = 3) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage. On a fresh database it creates its tables; two sweeps starting together both try,
    and the one that loses the race gets a duplicate-table error: the tables exist then, so it opens again."""
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(1 + attempt)
    raise AssertionError("unreachable")


def study_name_for(task_overrides: list[str], given: str | None = None) -> str:
    """`given`, else a name for the command line's overrides (order-independent)."""
    if given:
        return given
    kept = sorted(o for o in task_overrides
                  if not o.lstrip("+~").startswith("hydra") and o.split("=", 1)[0].lstrip("+~") not in RUN_KEYS)
    return "moirai-ft-" + hashlib.sha256(json.dumps(kept).encode()).hexdigest()[:12]


def sweep_overrides(sweep_dir: Path) -> list[str] | None:
    """The sweep's command-line overrides from the multirun.yaml its sweeper saved; None without one."""
    try:
        return [str(o) for o in OmegaConf.load(Path(sweep_dir) / "multirun.yaml").hydra.overrides.task]
    except Exception:  # noqa: BLE001 - not a sweep directory
        return None


def write_trial_numbers(sweep_dir: Path, numbers: dict[int, int]) -> None:
    """job number -> trial number, merged into the sweep's file (several batches of one sweep)."""
    path = Path(sweep_dir) / TRIALS
    path.parent.mkdir(parents=True, exist_ok=True)
    current = read_trial_numbers(sweep_dir)
    current.update({str(k): int(v) for k, v in numbers.items()})
    write_json_atomic(path, current)


def read_trial_numbers(sweep_dir: Path) -> dict[str, int]:
    numbers = read_json(Path(sweep_dir) / TRIALS)
    return {str(k): int(v) for k, v in numbers.items()} if isinstance(numbers, dict) else {}


def trial_by_number(study: optuna.Study, number: int) -> optuna.Trial:
    """A handle on an existing trial of the study (asked by the sweeper in another process)."""
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return optuna.Trial(study, trial_id)


def open_study(storage: optuna.storages.BaseStorage, name: str, pruner: optuna.pruners.BasePruner | None = None,
               sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    return optuna.create_study(storage=storage, study_name=name, direction="minimize", pruner=pruner,
                               sampler=sampler, load_if_exists=True)


def study_summary(study: optuna.Study) -> dict[str, Any]:
    """Trial counts by state: what a rerun continues from."""
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    return counts


def pruner_label(prune: DictConfig) -> str:
    """`asha(min_resource=1, reduction_factor=3)`: the pruner a prune config builds."""
    name = str(getattr(prune.name, "value", prune.name))
    return f"{name}(" + ", ".join(f"{k}={prune[k]}" for k in PRUNER_SETTINGS.get(name, ())) + ")"


def agree_on_pruner(study: optuna.Study, prune: DictConfig) -> None:
    """Record the study's pruner on first use; UserError when this sweep or job would prune differently."""
    label = pruner_label(prune)
    recorded = study.user_attrs.get(PRUNER_ATTR)
    if recorded is None:
        study.set_user_attr(PRUNER_ATTR, label)
    elif recorded != label:
        raise UserError(f"optuna study {study.study_name} prunes with prune={recorded}; this sweep asks for "
                        f"prune={label}: use the same prune settings to join it, or another prune.study_name")
