"""Callbacks and loggers as config groups (conf/callbacks, conf/logger), and the trackers: an MLflow store that a
sweep's jobs share, read back with MLflow's own API, and W&B's offline run files."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf

from moirai_ft.config.precheck import unknown_choice
from moirai_ft.errors import UserError
from moirai_ft.search.monitor import metric_key
from moirai_ft.train.from_config import REQUIRED_CALLBACKS, build_callbacks, build_loggers, check_loggers

from conftest import CONF, TINY, compose_cfg, run_train

# a job that is quick even beside another: few steps, few test windows and sample paths
QUICK = [*TINY, "steps_per_epoch=4", "val_check_interval=2", "eval.max_windows=8", "eval.num_samples=10"]


@pytest.fixture(autouse=True)
def _mlflow_tracking_uri_per_test(monkeypatch):
    """Lightning's MLFlowLogger sets MLflow's process-wide tracking URI (mlflow.set_tracking_uri) when a test builds
    one in this process (the resume test): a later test on the same worker would then search that test's SQLite
    store instead of the one its MLFLOW_TRACKING_URI names. Each test starts unset and puts back what it found."""
    try:
        from mlflow.tracking._tracking_service import utils
    except ImportError:  # the tracker extra is not installed: those tests say so themselves
        return
    monkeypatch.setattr(utils, "_tracking_uri", None)


def logger_options() -> list[str]:
    return sorted(p.stem for p in (CONF / "logger").glob("*.yaml"))


@pytest.mark.parametrize("option", logger_options())
def test_each_logger_option_composes_to_named_entries(option: str) -> None:
    cfg = compose_cfg([f"logger={option}"])
    expected = {"csv", "tensorboard"} if option == "many" else {option}
    assert set(cfg.logger) == expected
    check_loggers(cfg.logger)  # each tracker's package is installed here


def test_default_loggers_are_csv_and_tensorboard_in_logs(tmp_path: Path) -> None:
    loggers = build_loggers(compose_cfg().logger, tmp_path, resume_step=None)
    assert isinstance(loggers["csv"], CSVLogger) and isinstance(loggers["tensorboard"], TensorBoardLogger)
    assert {Path(lg.log_dir) for lg in loggers.values()} == {tmp_path / "logs"}


def test_callbacks_are_built_by_name_with_root_settings(tmp_path: Path) -> None:
    cfg = compose_cfg(["patience=7", "min_delta=0.5"])
    callbacks = build_callbacks(cfg, tmp_path)
    assert set(REQUIRED_CALLBACKS) <= set(callbacks)
    assert (callbacks["best_weights"].patience, callbacks["best_weights"].min_delta) == (7, 0.5)
    assert callbacks["best_weights"].best_dir == tmp_path / "checkpoints" / "best"
    assert callbacks["history"].path == tmp_path / "training_history.csv"
    assert Path(callbacks["last_checkpoint"].dirpath) == tmp_path / "checkpoints"


@pytest.mark.parametrize("override", ["logger=mlflw", "callbacks=nope"])
def test_unknown_option_of_the_new_groups_is_one_line(override: str) -> None:
    group = override.split("=")[0]
    message = unknown_choice([override], CONF)
    assert message is not None and "\n" not in message
    assert message.startswith(f"unknown {group} ")
    assert ("mlflow" if group == "logger" else "default") in message  # the options that exist


def test_unknown_logger_through_train_py_exits_2_with_one_line(tmp_path: Path) -> None:
    out = run_train(["logger=mlflw"], cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown logger 'mlflw'") and "wandb" in lines[0]


@pytest.mark.parametrize("tracker,extra", [("mlflow", "mlflow"), ("wandb", "wandb")])
def test_a_tracker_not_installed_is_one_error_line_naming_the_extra(tracker: str, extra: str, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, tracker, None)  # what `import mlflow` meets where it is not installed
    for name in [m for m in sys.modules if m == tracker or m.startswith(f"{tracker}.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, f"moirai_ft.train.trackers.{tracker}", raising=False)
    with pytest.raises(UserError) as e:
        check_loggers(compose_cfg([f"logger={tracker}"]).logger)
    assert f'pip install "moirai-ft[{extra}]"' in str(e.value) and "\n" not in str(e.value)
    monkeypatch.undo()
    importlib.import_module(f"moirai_ft.train.trackers.{tracker}")  # a fresh import for the other tests


@pytest.mark.slow  # a sweep of two jobs
def test_mlflow_sweep_is_one_experiment_with_params_history_and_test_metrics(tmp_path: Path, monkeypatch) -> None:
    import mlflow

    sweep = tmp_path / "sweep"
    out = run_train(["-m", "experiment=quickstart", *QUICK, "logger=mlflow", "lr=1e-3,2e-3",
                     f"hydra.sweep.dir={sweep}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{sweep / 'mlflow' / 'mlflow.db'}")  # the sweep's store
    runs = mlflow.search_runs(experiment_names=["moirai-ft"], output_format="list")
    assert len(runs) == 2
    assert sorted(float(r.data.params["lr"]) for r in runs) == [1e-3, 2e-3]
    client = mlflow.MlflowClient()
    monitored = metric_key(compose_cfg())
    for run in runs:
        job = sweep / run.info.run_name
        overrides = OmegaConf.load(job / ".hydra" / "overrides.yaml")  # Hydra's record of the job's overrides
        assert run.data.params == dict(o.split("=", 1) for o in overrides)
        assert run.data.params["experiment"] == "quickstart" and run.data.params["steps_per_epoch"] == "4"
        history = client.get_metric_history(run.info.run_id, monitored)
        assert len({m.step for m in history}) >= 3  # the zero-shot check and two checks while training
        result = json.loads((job / "metrics.json").read_text())
        assert run.data.metrics["test/mase"] == pytest.approx(result["test"]["mase"])
        assert run.data.metrics["zero_shot_test/mase"] == pytest.approx(result["zero_shot_test"]["mase"])
        assert run.data.metrics["best_val_loss"] == pytest.approx(result["best_val_loss"])
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["forecast.png"]
        assert run.info.status == "FINISHED"


def test_wandb_offline_writes_its_run_files_in_the_job_dir(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline by its config, not by the environment
    job = tmp_path / "job"
    out = run_train([*QUICK, "logger=wandb", f"hydra.run.dir={job}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = list((job / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    records = runs[0].read_bytes()  # protobuf records: metric names are stored as they are
    for key in (b"val/loss", b"test/mase", b"lr"):
        assert key in records, key


def test_mlflow_resume_continues_the_jobs_run_and_a_fresh_start_replaces_it(tmp_path: Path) -> None:
    from moirai_ft.train.trackers.mlflow import mlflow_logger

    job = tmp_path / "job"  # outside a Hydra sweep: the store is the job's own, job/mlflow/mlflow.db
    first = mlflow_logger(job, resume_step=None)
    first.log_metrics({"val/loss": 2.0}, step=0)
    resumed = mlflow_logger(job, resume_step=4)  # killed, then resumed from last.ckpt: the same run goes on
    assert resumed.run_id == first.run_id
    restarted = mlflow_logger(job, resume_step=None)  # started again from scratch (after running out of memory)
    assert restarted.run_id != first.run_id
    runs = restarted.experiment.search_runs([restarted.experiment_id])
    assert [r.info.run_id for r in runs] == [restarted.run_id]  # one run per job: the abandoned one is deleted


@pytest.mark.cluster
def test_mlflow_tracking_server_holds_the_runs_params_metrics_and_artifacts(mlflow_server_url: str, tmp_path: Path,
                                                                             monkeypatch) -> None:
    import mlflow

    experiment = f"server-{tmp_path.name}"
    job = tmp_path / "job"
    out = run_train([*QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri={mlflow_server_url}",
                     f"logger.mlflow.experiment_name={experiment}", "lr=2e-3", f"hydra.run.dir={job}"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_url)
    (run,) = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    result = json.loads((job / "metrics.json").read_text())
    assert run.info.run_name == job.name and run.info.status == "FINISHED"
    assert float(run.data.params["lr"]) == 2e-3
    assert run.data.metrics["test/mase"] == pytest.approx(result["test"]["mase"])
    assert run.data.metrics["best_val_loss"] == pytest.approx(result["best_val_loss"])
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, metric_key(compose_cfg()))) >= 2
    assert [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)] == ["forecast.png"]
    local = tmp_path / "forecast.png"
    mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="forecast.png", dst_path=str(tmp_path))
    assert local.read_bytes() == (job / "forecast.png").read_bytes()  # the server keeps the picture itself


def test_an_mlflow_server_that_is_down_is_one_line_before_any_training(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = tmp_path / "job"
    out = run_train([*QUICK, "logger=mlflow", f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}",
                     f"hydra.run.dir={job}"], cwd=tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no MLflow tracking server answers at"), out.stderr
    assert f"logger.mlflow.tracking_uri=http://127.0.0.1:{port}" in lines[0]
    assert not (job / "checkpoints").exists()  # it stopped before training
