"""predict.py's run: which job, the checked input (before any model loads), the forecast, the files."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from moirai_ft.evaluation.blend import recorded_weight
from moirai_ft.forecast.inputs import prepare_input
from moirai_ft.forecast.job import open_job, resolve
from moirai_ft.values import plain


def data_overrides(cfg: DictConfig, task: list[str]) -> dict[str, object]:
    """The data.* keys given on the command line (`task`: Hydra's task overrides), with the values Hydra
    parsed for them; the job's own data options hold for every other key."""
    data = OmegaConf.to_container(cfg.data, resolve=True, enum_to_str=True)
    keys = [o.split("=", 1)[0].lstrip("+~") for o in task]
    return {k.split(".", 1)[1]: data[k.split(".", 1)[1]] for k in keys if k.startswith("data.")}


def run(cfg: DictConfig, data: dict[str, object]) -> list[Path]:
    """Forecast as predict.py's config says; returns the files written. UserError on bad input, before
    any model loads where the input alone shows it."""
    job_dir, from_sweep = resolve(cfg.job, cfg.rank_by)
    if from_sweep:
        print(f"best job by {cfg.rank_by}: {job_dir}")
    job = open_job(job_dir)
    if cfg.blend:
        recorded_weight(job.metrics, job.path)  # a job without a blend: one line before any model loads
    inp = prepare_input(job, data, None, cfg.future.path, cfg.backtest)

    # torch and uni2ts from here on
    from moirai_ft.forecast.forecaster import Forecaster
    from moirai_ft.forecast.output import default_out, write_all

    forecaster = Forecaster(job, zero_shot=cfg.zero_shot, data=data, device=cfg.device)
    forecast = forecaster.forecast(inp, blend=cfg.blend, calibrated=cfg.calibrated)
    out = Path(cfg.out) if cfg.out else default_out(job.path)
    about = {"job": str(job.path), "selected_by": cfg.rank_by if from_sweep else None, "backtest": cfg.backtest,
             "data": data, "future": cfg.future.path}
    written = write_all(forecast, out, str(plain(cfg.format)), cfg.plot_items, about)
    for note in forecast.notes:
        print(f"note: {note}")
    print(f"{forecast.label} forecast of {len(forecast.items)} target(s) x {len(inp.horizon_time)} steps from "
          f"{inp.horizon_time[0]} ({job.config.model.name}, {job.path.name})")
    if forecast.metrics:
        print("backtest: " + ", ".join(f"{k} {v:.4g}" for k, v in forecast.metrics.items()))
    elif cfg.backtest:
        print("backtest: the data holds no target value over the horizon; no metrics")
    print("wrote " + ", ".join(str(p) for p in written))
    return written
