"""What a job writes when its output goes to a file (a SLURM .out, a CI log, `| tee`): plain progress
lines, no carriage-return frames, none of Lightning's hints that do not apply."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys

from conftest import ROOT

# the README's main job, shrunk in work only (steps, windows, samples), with a progress line every 0.5 s
SHRINK = ["steps_per_epoch=6", "epochs=1", "val_check_interval=3", "eval.max_windows=16", "eval.num_samples=8",
          "eval.plot_windows=0", "hardware.progress_log_s=0.5"]
HINTS = ("srun", "Tip:", "litlogger", "litmodels")


def readme_main_job() -> list[list[str]]:
    """The README's main job (step 2 of its first block): its commands, split at `&&`."""
    line = next(l for l in (ROOT / "README.md").read_text().splitlines() if l.startswith("python train.py -m "))
    return [shlex.split(part) for part in line.split("&&")]


def test_readme_main_job_sent_to_a_file_is_plain_lines_without_lightning_hints(tmp_path):
    train, analyze = readme_main_job()
    assert train[:2] == ["python", "train.py"] and analyze[:2] == ["python", "analyze.py"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if shutil.which("srun") is None:  # the hint's condition: srun on PATH, this process not started by it
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 1\n")
        (tmp_path / "bin" / "srun").chmod(0o755)
        env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    log = tmp_path / "job.log"
    with open(log, "wb") as out:  # a file, not a terminal: what SLURM and CI give a job
        for cmd, extra in ((train, SHRINK), (analyze, [])):
            proc = subprocess.run([sys.executable, str(ROOT / cmd[1]), *cmd[2:], *extra], cwd=tmp_path, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, timeout=600)
            assert proc.returncode == 0, log.read_text()[-3000:]
    raw = log.read_bytes()
    text = raw.decode()
    assert b"\r" not in raw and "\x1b[" not in text  # no bar frames, no cursor movement
    for hint in HINTS:
        assert hint not in text, hint
    lines = text.splitlines()
    assert len(lines) < 300, len(lines)
    progress = [l for l in lines if "train step " in l]
    assert progress, text[-3000:]
    assert all(re.search(r"train step \d+/\d+ \(\d+%\): loss [\d.]+, \d+ samples/s, [\d:]+ left", l)
               for l in progress), progress
    assert text.count("train done: ") == 4  # one closing line per job
    assert "Diagnosis" in text  # the analysis ran into the same file


def test_a_terminal_keeps_the_live_bar_and_a_file_gets_lines(tmp_path, monkeypatch):
    from conftest import compose_cfg

    from moirai_ft.train.progress import SparseProgressBar
    from moirai_ft.train import fit
    from moirai_ft.train.progress import LineProgress

    cfg = compose_cfg()
    for terminal, kind in ((True, SparseProgressBar), (False, LineProgress)):
        monkeypatch.setattr(fit, "is_terminal", lambda: terminal)
        trainer = fit.build_trainer(cfg, tmp_path, {}, steps_per_epoch=6)
        bars = [c for c in trainer.callbacks if isinstance(c, (SparseProgressBar, LineProgress))]
        assert [type(b) for b in bars] == [kind]
