"""LOCAL backend: jobs run in a `python -m backend_local serve` worker that this client starts on
first use, keeps for the next jobs (models stay loaded), and starts again after it dies."""

import glob
import os
import queue
import shutil
import threading
import time

from . import engine_status
from .client_base import JobClient, cancelled
from .contract import Gen3DError, errors, progress
from .worker_process import EXITED, WorkerProcess, log_excerpt

# A cancelled job must stop within 2 s. The pipeline checks for cancellation between steps, and some
# steps take longer than that, so after this grace period the worker is killed (and restarted on the
# next job): losing loaded models is better than a job that keeps burning the GPU after Cancel.
CANCEL_GRACE_S = 1.2
POLL_S = 0.05
PREFERENCES_HINT = "Edit > Preferences > Add-ons > Gen3D"
LOG_NAME = "worker.log"


def check_python(path):
    if not path:
        raise Gen3DError(errors.INVALID_INPUT, "No Python executable is set for the local backend. Press \"Set up local "
                         "backend\" in %s, or choose the Python of a Gen3D environment there (e.g. "
                         "<project>/.venv/bin/python), or set the GEN3D_PYTHON environment variable." % PREFERENCES_HINT, stage="queued", retryable=False)
    if not os.path.isfile(path):
        raise Gen3DError(errors.INVALID_INPUT, "The Python executable '%s' does not exist. Fix the path in %s."
                         % (path, PREFERENCES_HINT), stage="queued", retryable=False)
    if os.name != "nt" and not os.access(path, os.X_OK):
        raise Gen3DError(errors.INVALID_INPUT, "'%s' is not an executable program. Choose the Python executable "
                         "of the Gen3D environment in %s." % (path, PREFERENCES_HINT), stage="queued",
                         retryable=False)


def check_backend_dir(path):
    if path and not os.path.isdir(os.path.join(path, "backend_local")):
        raise Gen3DError(errors.INVALID_INPUT, "The backend folder '%s' has no backend_local package. Set it in %s "
                         "to the Gen3D project folder, or leave it empty when the Python already has Gen3D "
                         "installed." % (path, PREFERENCES_HINT), stage="queued", retryable=False)


def remove_partial(job_dir, job_id):
    """Remove the staging folder a killed worker leaves behind (the pipeline's naming:
    <parent>/.<name>.partial-<job_id>), so nothing half-written sits next to the results."""
    pattern = os.path.join(os.path.dirname(job_dir), ".%s.partial-%s" % (os.path.basename(job_dir), job_id))
    for path in glob.glob(glob.escape(pattern)):
        shutil.rmtree(path, ignore_errors=True)


class LocalClient(JobClient):
    def __init__(self, settings):
        super().__init__(settings)
        self._worker = None
        self._lock = threading.Lock()
        self._closed = False
        self.crashes = 0                      # times the worker died on its own (shown in status)

    @property
    def log_path(self):
        return os.path.join(self.settings.output_dir, LOG_NAME) if self.settings.output_dir else ""

    def check(self):
        check_python(self.settings.python)
        check_backend_dir(self.settings.backend_dir)

    def status(self):
        worker = self._worker
        if worker is None:
            return "worker not started"
        if worker.alive():
            return "worker ready (%s, pid %s)" % (worker.info.get("device", "?"), worker.pid)
        return "worker stopped (exit code %s)" % worker.exit_code()

    @property
    def worker(self):
        return self._worker

    def _ensure_worker(self, job_id, emit, cancel_event):
        with self._lock:
            if self._closed:
                raise cancelled("queued")
            if self._worker is not None and self._worker.alive():
                return self._worker
            self._worker = None
        self.check()
        emit(progress.progress_event(job_id, "queued", 0.0, "starting the local worker"))
        worker = WorkerProcess(self.settings.python, self.settings.backend_dir, self.settings.device,
                               low_memory=not self.settings.keep_models_loaded, log_path=self.log_path)
        with self._lock:
            if self._closed:
                raise cancelled("queued")
            self._worker = worker             # visible to close() while it starts
        worker.start(cancel_event)
        engine_status.status.update(self.settings, worker.info.get("engines"))
        return worker

    def run(self, job_id, request, job_dir, emit, cancel_event):
        worker = self._ensure_worker(job_id, emit, cancel_event)
        if not worker.send({"op": "submit", "job_id": job_id, "request": request, "out_dir": job_dir}):
            raise self._crashed(worker, "queued")
        stage = "queued"
        cancel_deadline = None
        while True:
            if cancel_event.is_set() and cancel_deadline is None:
                worker.send({"op": "cancel", "job_id": job_id})
                cancel_deadline = time.monotonic() + CANCEL_GRACE_S
            if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                worker.kill()
                remove_partial(job_dir, job_id)
                raise cancelled(stage)
            try:
                event = worker.events.get(timeout=POLL_S)
            except queue.Empty:
                continue
            kind = event.get("event")
            if kind == EXITED:
                if cancel_event.is_set():     # we stopped it (close() or the cancel deadline)
                    remove_partial(job_dir, job_id)
                    raise cancelled(stage)
                remove_partial(job_dir, job_id)
                raise self._crashed(worker, stage)
            if event.get("job_id") != job_id:
                continue                      # a late answer about an earlier job
            if kind == "progress":
                stage = event.get("stage") or stage
                emit(progress.progress_event(job_id, stage, event.get("progress", 0.0), event.get("message", "")))
            elif kind == "completed":
                if cancel_event.is_set():     # finished just as Cancel was pressed: Cancel wins, files stay
                    raise cancelled(stage)
                return None
            elif kind == "cancelled":
                raise cancelled(event.get("stage") or stage)
            elif kind == "failed":
                raise Gen3DError.from_dict(event.get("error") or {})

    def _crashed(self, worker, stage):
        self.crashes += 1
        return Gen3DError(errors.INTERNAL, "The local worker stopped unexpectedly (exit code %s) during %s; it "
                          "starts again with the next job.%s" % (worker.exit_code(), stage,
                                                                  log_excerpt(worker.stderr_tail(12), self.log_path)),
                          stage=stage, retryable=True)

    def close(self):
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop()

    def detach(self):
        with self._lock:
            self._closed = True
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.detach()
