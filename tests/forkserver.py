"""A fork server for the tests' `python train.py ...` runs (tests/conftest.py run_train).

Each train.py process spends ~6.5 CPU s starting Python and importing torch, Lightning and uni2ts before
its ~1 s of tiny work; the suite starts dozens. This server is a clean interpreter that imports what
train.py imports and then only forks: per run, a child takes the run's cwd, environment, argv and stdio
and executes the real train.py as `__main__` (runpy), ending as `python train.py` would (its exit code,
1 and the traceback on an uncaught exception, atexit handlers run). Only the interpreter start and those
imports are shared; the server itself never composes a config, trains, or starts a thread.

Not for tests whose point is the process start itself (what a fresh process imports, a pid killed from
outside): those start `python` themselves. MOIRAI_FT_TEST_FORK=0 turns the server off (plain
subprocesses everywhere). One server per pytest process, started on the first run, stopped at exit.

Protocol: a SOCK_SEQPACKET socket pair. The client sends one JSON request (argv, cwd, env) with three fds
(stdin, and the write ends of the stdout/stderr pipes it reads, as subprocess.run would); the server
answers {"pid"} once forked and {"returncode", "cpu_s"} once the child is reaped.
"""

from __future__ import annotations

import json
import locale
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "train.py"
ENABLED = "MOIRAI_FT_TEST_FORK"
# environment variables read while a job runs (by moirai_ft, the tests' fault injection, or libraries the
# server does not import), never during the server's imports: a run may set them differently from the
# server. Any other difference (threads, PYTHONPATH, CUDA_VISIBLE_DEVICES, HF_*, ...) may have been read
# at import, so such a run gets a plain subprocess.
RUNTIME_PREFIXES = ("MOIRAI_FT_", "PYTEST_", "SLURM_", "SUBMITIT_", "WANDB_", "MLFLOW_")
FORK_SAFE_THREADS = {"jemalloc_bg_thd"}  # see _check_forkable
MAX_MESSAGE = 1 << 20
CPU_S = 0.0  # CPU seconds of the children this process's server ran (tests/cpu_cost.py adds them)


def _runtime(key: str) -> bool:
    return key.startswith(RUNTIME_PREFIXES)


# --- the server (`python tests/forkserver.py FD`) ---------------------------------------------------------

def _preload() -> None:
    """What train.py and a job import, in train.py's order (moirai_ft first: its import hook must be in
    place before Lightning loads torchmetrics, moirai_ft/imports.py). Nothing optional: a module that a
    job checks for in sys.modules (optuna, peft) stays out, as in a fresh process."""
    import warnings

    # train.py's own filters, so that imports here warn no more than they would there (removed below: each
    # run's train.py sets them itself)
    warnings.filterwarnings("ignore", message=".*register_new_resolver.*")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"hydra\..*")
    ours = warnings.filters[:2]
    import hydra  # noqa: F401
    import hydra.core.hydra_config  # noqa: F401

    import moirai_ft.config.schema  # noqa: F401
    import moirai_ft.budget.cli  # noqa: F401
    import moirai_ft.console  # noqa: F401
    import moirai_ft.config.precheck  # noqa: F401
    import moirai_ft.sweep.hydra_callbacks  # noqa: F401
    import moirai_ft.sweep.runner  # noqa: F401
    import moirai_ft.instrument.faults  # noqa: F401
    import moirai_ft.train.job  # noqa: F401
    try:
        import moirai_ft.model.compat  # noqa: F401
    except Exception:  # another uni2ts/Lightning: each run's train.py says so itself
        pass
    for f in ours:
        warnings.filters.remove(f)
    warnings._filters_mutated()  # type: ignore[attr-defined]


def _check_forkable() -> None:
    """A fork copies only the calling thread, and an import that printed would have printed in every
    train.py: the server refuses either rather than differ from a fresh process. One native thread is
    known safe: pyarrow's jemalloc starts its purging thread when the library loads, and jemalloc's own
    fork handlers leave the child a consistent allocator without it (background threads off)."""
    import threading

    tasks = Path("/proc/self/task")
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir() if int(t.name) != os.getpid()] \
        if tasks.is_dir() else []
    others = [n for n in names if n not in FORK_SAFE_THREADS]
    if threading.active_count() != 1 or others:
        raise RuntimeError(f"the imports started threads ({others or threading.enumerate()}): forking would lose them")
    for stream in (1, 2):
        if os.fstat(stream).st_size:
            raise RuntimeError("the imports printed (see above): a fresh train.py would print it too")


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: become `python train.py ARGS` in the run's cwd, environment and stdio."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"][1:])  # [train.py, *args]
    sys.path[0] = str(Path(sys.argv[0]).parent)  # as `python train.py` puts the script's folder first
    if "numpy" in sys.modules:  # a fresh process draws numpy's global seed; forked children would share one
        sys.modules["numpy"].random.seed()
    import runpy

    runpy.run_path(sys.argv[0], run_name="__main__")


def serve(fd: int) -> int:
    sys.path[0] = str(ROOT)
    control = socket.socket(fileno=fd)
    _preload()
    sys.stdout.flush()
    sys.stderr.flush()
    _check_forkable()  # on refusal the server exits, the client sees no "ready" and runs plain subprocesses
    control.send(json.dumps({"ready": True}).encode())
    while True:
        message, fds, _, _ = socket.recv_fds(control, MAX_MESSAGE, 3)
        if not message:  # the client closed its end (its session ended, or it died)
            return 0
        request = json.loads(message)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            control.close()
            _child(request, fds)
            return 0  # train.py returned without sys.exit: exit 0, through the interpreter's normal exit
        for f in fds:
            os.close(f)
        control.send(json.dumps({"pid": pid}).encode())
        _, status, usage = os.wait4(pid, 0)
        control.send(json.dumps({"returncode": os.waitstatus_to_exitcode(status),
                                 "cpu_s": usage.ru_utime + usage.ru_stime}).encode())


# --- the client (in the pytest process) --------------------------------------------------------------------

class ForkServer:
    def __init__(self, env: dict[str, str]):
        self.env = {k: v for k, v in env.items() if not _runtime(k)}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.log = tempfile.TemporaryFile()  # the server's own output (none unless it fails)
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(theirs.fileno())], pass_fds=[theirs.fileno()],
            cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
        )
        theirs.close()
        self.control = ours
        self.ready: bool | None = None  # known at the first run (the server's imports take seconds)

    def usable(self) -> bool:
        """Whether the server came up. One that refused (its imports started a thread or printed, e.g. a
        new library's warning on another stack) leaves the suite to plain subprocesses, said once as a warning."""
        if self.ready is None:
            try:
                self.ready = bool(self._receive().get("ready"))
            except RuntimeError as e:  # _receive's message ends with the server's log: its refusal, last
                self.ready = False
                why = str(e).strip().splitlines()[-1]
                warnings.warn(f"the test fork server did not start ({why}); the tests' train.py runs are plain "
                              "subprocesses", stacklevel=3)
        return self.ready

    def serves(self, env: dict[str, str]) -> bool:
        """Whether a run with this environment can be a child of this server (see RUNTIME_PREFIXES)."""
        keys = {k for k in (*env, *self.env) if not _runtime(k)}
        return self.proc.poll() is None and all(env.get(k) == self.env.get(k) for k in keys)

    def _receive(self) -> dict:
        try:
            message = self.control.recv(MAX_MESSAGE)
        except ConnectionResetError:
            message = b""
        if not message:
            self.log.seek(0)
            raise RuntimeError(f"the test fork server died: {self.log.read()[-4000:].decode(errors='replace')}")
        return json.loads(message)

    def run(self, argv: list[str], cwd: Path, env: dict[str, str], timeout: float | None) -> subprocess.CompletedProcess:
        """subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout), forked."""
        global CPU_S
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            request = json.dumps({"argv": argv, "cwd": str(cwd), "env": env}).encode()
            socket.send_fds(self.control, [request], [0, out_w, err_w])
        finally:
            os.close(out_w)
            os.close(err_w)
        pid = self._receive()["pid"]  # the first run waits here for the server's imports, outside the timeout
        deadline = None if timeout is None else time.monotonic() + timeout
        chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
        result = None
        open_pipes = {out_r, err_r}
        with selectors.DefaultSelector() as sel:
            for f in (out_r, err_r, self.control):
                sel.register(f, selectors.EVENT_READ)
            try:
                # as communicate(): until the child is reaped and both pipes reach EOF (also in its children)
                while result is None or open_pipes:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        os.kill(pid, signal.SIGKILL)  # subprocess.run kills the child (only the child) and waits for it
                        while result is None:
                            result = self._receive()
                        raise subprocess.TimeoutExpired(argv, timeout, b"".join(chunks[out_r]), b"".join(chunks[err_r]))
                    for key, _ in sel.select(left):
                        if key.fileobj is self.control:
                            result = self._receive()
                            sel.unregister(self.control)
                            continue
                        data = os.read(key.fd, 1 << 16)
                        if data:
                            chunks[key.fd].append(data)
                        else:
                            sel.unregister(key.fd)
                            open_pipes.discard(key.fd)
            finally:
                os.close(out_r)
                os.close(err_r)
        CPU_S += result["cpu_s"]
        return subprocess.CompletedProcess(argv, result["returncode"], _text(chunks[out_r]), _text(chunks[err_r]))

    def stop(self) -> None:
        self.control.close()  # the server reads EOF and exits
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _text(chunks: list[bytes]) -> str:
    # what text=True gives: the locale's encoding, universal newlines (Lightning's \r progress updates too)
    data = b"".join(chunks).decode(locale.getpreferredencoding(False))
    return data.replace("\r\n", "\n").replace("\r", "\n")


_server: ForkServer | None = None


def enabled() -> bool:
    return os.environ.get(ENABLED, "1") != "0"


def run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float | None) -> subprocess.CompletedProcess:
    """`argv` (a train.py command) as subprocess.run(..., capture_output=True, text=True) would run it:
    forked from this process's server when its environment allows, else a plain subprocess."""
    global _server
    if _server is None and enabled():
        _server = ForkServer(env)
    if _server is not None and _server.usable() and _server.serves(env):
        return _server.run(argv, cwd, env, timeout)
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def stop() -> None:
    global _server
    if _server is not None:
        _server.stop()
        _server = None


if __name__ == "__main__":
    sys.exit(serve(int(sys.argv[1])))
