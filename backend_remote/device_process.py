"""Each device's jobs run in a child process of the server, so cancel and --job-timeout stop a job
wherever it is.

Why a process: a Python thread cannot be stopped from outside, and a GPU job can spend minutes in
one CUDA call, a diffusion step or a C extension that never reaches the pipeline's next cancel
check. So a stop works in two steps:

1. the job's cancel event is set in the child; the pipeline stops at its next progress report and
   an image download at once (its watchdog shuts the socket). The child, with its loaded models,
   stays for the next job. This is the usual case and takes well under a second.
2. if the job has not stopped `grace_s` seconds later, the child is killed (SIGKILL): the operating
   system and the CUDA driver free its memory, whatever state the context was in. The next job
   starts a fresh child, which loads its models again.

A child that dies on its own (the kernel's OOM killer, a segfault in a native library) fails its
job as INTERNAL, retryable, and is replaced the same way. The child also exits when the server
does, so a killed server leaves no process holding a GPU.
"""

import glob
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback

from shared.errors import CANCELLED, INTERNAL, Gen3DError

GRACE_S = 10.0
_POLL_S = 0.05


def default_factory(device):
    from backend_local.pipeline import Pipeline

    return Pipeline(device)


def _exit_with_parent(parent_pid):
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(1)


def _child(conn, cancel, factory, device, parent_pid):
    # Ctrl+C or a SIGTERM to the whole process group is the server's to handle: it stops the job
    # through the cancel event (or kills this process); this process ends when the server does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True).start()
    send_lock = threading.Lock()

    def send(message):
        with send_lock:               # engines may report progress from their own threads
            conn.send(message)

    pipeline = factory(device)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        request, out_dir, job_id = message
        try:
            manifest = pipeline.run(request, out_dir, job_id=job_id, on_progress=lambda event: send(("progress", event)),
                                    cancel=cancel)
            send(("done", manifest))
        except Gen3DError as exc:
            send(("error", exc.to_dict()))
        except BaseException as exc:  # noqa: BLE001 - the parent must always get an answer
            traceback.print_exc(file=sys.stderr)
            send(("error", Gen3DError(INTERNAL, "The device worker failed (%s)." % type(exc).__name__).to_dict()))


class DeviceProcess:
    """Looks like a Pipeline to the scheduler (`run(request, out_dir, job_id, on_progress, cancel)`),
    but runs each job in a child process that it kills when a stop is not obeyed in time."""

    def __init__(self, device, factory=default_factory, grace_s=GRACE_S):
        self.device = device
        self.factory = factory
        self.grace_s = grace_s
        self.restarts = 0                 # children killed or lost, for /health and tests
        self._context = multiprocessing.get_context("spawn")   # CUDA cannot be forked
        self._proc = None
        self._conn = None
        self._cancel = self._context.Event()

    @property
    def pid(self):
        return self._proc.pid if self._proc is not None else None

    def start(self):
        """Start the child now (it loads its pipeline while the server starts listening)."""
        if self._proc is not None and self._proc.is_alive():
            return
        parent_end, child_end = self._context.Pipe()
        self._proc = self._context.Process(target=_child, name="gen3d-%s" % self.device,
                                           args=(child_end, self._cancel, self.factory, self.device, os.getpid()))
        self._proc.start()
        child_end.close()
        self._conn = parent_end

    def close(self, timeout=5.0):
        if self._proc is None:
            return
        try:
            self._conn.send(None)
        except OSError:
            pass
        self._proc.join(timeout)
        self._kill()

    def _kill(self):
        if self._proc is not None and self._proc.is_alive():
            self._proc.kill()
            self._proc.join(10)
        if self._conn is not None:
            self._conn.close()
        self._proc, self._conn = None, None

    def run(self, request, out_dir, job_id=None, on_progress=None, cancel=None):
        self.start()
        self._cancel.clear()
        stage = "preprocess"
        try:
            self._conn.send((request, out_dir, job_id))
            stop_by = None
            while True:
                if self._conn.poll(_POLL_S):
                    kind, payload = self._conn.recv()
                    if kind == "progress":
                        stage = payload.get("stage") or stage
                        if on_progress is not None:
                            on_progress(payload)
                        continue
                    if kind == "done":
                        return payload
                    raise Gen3DError.from_dict(payload)
                if not self._proc.is_alive():
                    raise EOFError
                if cancel is not None and cancel.is_set():
                    if stop_by is None:
                        self._cancel.set()
                        stop_by = time.monotonic() + self.grace_s
                    elif time.monotonic() > stop_by:
                        self._lost(out_dir)
                        raise Gen3DError(CANCELLED, "The job was stopped.", stage=stage, retryable=False)
        except (EOFError, OSError, BrokenPipeError):
            code = None
            if self._proc is not None:
                self._proc.join(2.0)      # the pipe closes a moment before the exit status is known
                code = self._proc.exitcode
            self._lost(out_dir)
            raise Gen3DError(INTERNAL, "The worker process for %s stopped during %s (exit code %s), for example "
                             "killed for using too much memory. Try again; a fresh worker takes the job."
                             % (self.device, stage, code), stage=stage, retryable=True)

    def _lost(self, out_dir):
        """The child is killed or gone: start a fresh one now (it loads while the queue moves on) and
        remove what the old one half wrote."""
        self._kill()
        self.restarts += 1
        self.start()
        parent, name = os.path.split(out_dir)
        for partial in glob.glob(os.path.join(glob.escape(parent), ".%s.partial-*" % glob.escape(name))):
            shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(out_dir, ignore_errors=True)
