"""A job's resolved config, saved beside its results and loaded back (re-evaluation, the lr finder): typed by
the root schema, as when the job composed it."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from moirai_ft.artifacts import CONFIG, HYDRA_CONFIG
from moirai_ft.config.presets import shipped_monitors
from moirai_ft.config.root import RootSchema
from moirai_ft.errors import UserError, first_line


def save_config(cfg: DictConfig, job_dir: Path) -> None:
    """Write the resolved config to <job_dir>/config.yaml unless Hydra already wrote .hydra/config.yaml,
    so a job run in-process can be re-evaluated too."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    if not (job_dir / HYDRA_CONFIG).is_file() and not (job_dir / CONFIG).is_file():
        (job_dir / CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))


def load_job_config(job_dir: Path, overrides: list[str] | None = None) -> DictConfig:
    """The job's saved config with `overrides` (dotted keys of it), typed by the root schema."""
    job_dir = Path(job_dir)
    path = next((p for p in (job_dir / CONFIG, job_dir / HYDRA_CONFIG) if p.is_file()), None)
    if path is None:
        raise UserError(f"{job_dir} has no {CONFIG} or {HYDRA_CONFIG}; pass the directory of a job run by train.py")
    saved = OmegaConf.load(path)
    if "monitors" not in saved:  # a job written before monitors were config entries: the shipped ones
        saved.monitors = shipped_monitors()
    try:  # typed by the root schema, as when the job composed it: a wrong type is one line here too
        cfg = OmegaConf.merge(OmegaConf.structured(RootSchema), saved)
    except ValidationError as e:
        raise UserError(f"{path} does not fit the config's schema ({first_line(e)}); it was written by another version") from e
    OmegaConf.set_struct(cfg, True)  # an override naming an unknown key is an error, not a new key
    try:
        return OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides or [])))
    except ConfigKeyError as e:
        raise UserError(f"unknown config key in {overrides}: {first_line(e)}; use keys of {path}") from e
    except ValidationError as e:
        raise UserError(f"{first_line(e)} (in {overrides})") from e
