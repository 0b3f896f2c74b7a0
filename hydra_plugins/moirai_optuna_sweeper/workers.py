"""Which sweep of a shared study owns which trial. Several sweeps (the same command on several nodes, or
rerun after a kill) ask trials of one study: each records itself in the study (host, pid, a heartbeat), and
takes over the trials of sweeps that had ended when it started. A trial a killed sweep left running is
failed-by-interruption and asked again (`requeue_interrupted`); it does not count towards n_trials."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import optuna

log = logging.getLogger(__name__)
INTERRUPTED = "interrupted"  # user attribute of a trial a killed sweep left running (not counted, asked again)
OWNER = "sweep"  # trial user attribute: the id of the sweep that asked it
HEARTBEAT_S, STALE_S = 30.0, 180.0  # a sweep on another machine is taken as ended when its record is this old


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_alive(record: dict[str, Any], now: float) -> bool:
    """Whether the sweep of a study record (`Worker.record`) still runs."""
    if record.get("ended"):
        return False
    if record.get("host") == socket.gethostname():
        return _pid_alive(int(record.get("pid", 0)))
    return now - float(record.get("beat", 0)) < STALE_S


class Worker:
    """This sweep in the study: its record, kept fresh by a heartbeat thread, and the sweeps whose trials it owns."""

    def __init__(self, study: optuna.Study):
        self.study, self.id = study, f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        now = time.time()
        records = {k[len(OWNER) + 1:]: v for k, v in study.user_attrs.items() if k.startswith(f"{OWNER}:")}
        self.owned = {self.id} | {k for k, v in records.items() if not sweep_alive(v, now)}
        self._stop = threading.Event()
        self._beat(ended=False)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _beat(self, ended: bool) -> None:
        self.study.set_user_attr(f"{OWNER}:{self.id}", {"host": socket.gethostname(), "pid": os.getpid(),
                                                         "beat": time.time(), "ended": ended})

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._beat(ended=False)
            except Exception as e:  # noqa: BLE001 - the storage hiccuped: the next beat tries again
                log.warning("optuna study heartbeat: %s", e)

    def end(self) -> None:
        self._stop.set()
        self._beat(ended=True)

    def owns(self, trial: optuna.trial.FrozenTrial) -> bool:
        """Its own trials and those of sweeps that had ended when it started (and trials no sweep asked)."""
        return trial.user_attrs.get(OWNER, None) in self.owned or OWNER not in trial.user_attrs


def requeue_interrupted(study: optuna.Study, worker: Worker) -> None:
    """Trials a killed sweep left running: recorded as failed-by-interruption and asked again, so
    their jobs continue (or are skipped, when they had finished) under the fingerprint resume. Only
    ended sweeps' trials (a running sweep's trials are its own); the state change is the storage's
    check-and-set, so of two sweeps starting together only one asks a trial again."""
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not worker.owns(t) or t.user_attrs.get(OWNER) == worker.id:
            continue
        if OWNER not in t.user_attrs and t.datetime_start and now - t.datetime_start.timestamp() < STALE_S:
            continue  # just asked by a sweep that has not tagged it yet
        try:
            if not study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another sweep got there first
        study._storage.set_trial_user_attr(t._trial_id, INTERRUPTED, True)
        study.enqueue_trial(t.params, skip_if_exists=False)


def counted(study: optuna.Study, worker: Worker) -> int:
    """The trials that count towards n_trials: finished, not interrupted, this sweep's (Worker.owns)."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=done)
               if not t.user_attrs.get(INTERRUPTED) and worker.owns(t))
