"""The server's queue: one job at a time per device, in submission order, each device with its own
pipeline (models stay loaded between jobs). The job store is the truth about a job's state; the
in-memory queue only orders the work and is rebuilt from the store at start-up.
"""

import collections
import io
import os
import shutil
import sys
import threading
import time
import traceback
import uuid

from dataclasses import dataclass

from shared.errors import CANCELLED, INTERNAL, INVALID_INPUT, TIMEOUT, Gen3DError, invalid
from shared.progress import progress_event
from shared.request import decode_base64_image, inline_image_size, parse_request

from . import job_store
from .execute import execute_job
from .public_errors import public_error


def log(message):
    print("[gen3d] %s" % message, file=sys.stderr, flush=True)


def new_job_id():
    return str(uuid.uuid4())


def interrupted_error(job):
    stage = (job.progress or {}).get("stage")
    return Gen3DError(INTERNAL, "The server stopped (a restart or a crash) while this job was running. Submit it "
                      "again.", stage=stage, retryable=True).to_dict()["error"]


@dataclass(frozen=True)
class Quotas:
    """What one API key may have queued or running at once, and the server-wide cap on the inline
    images waiting on disk (each up to ~86 MB of base64)."""
    jobs_per_key: int = 16
    bytes_per_key: int = 512 * 2 ** 20
    bytes_total: int = 4 * 2 ** 30


class QueueFull(Exception):
    """A submission over a quota: the server answers 429 with Retry-After."""

    def __init__(self, message, retry_after_s=30):
        super().__init__(message)
        self.error = Gen3DError(INVALID_INPUT, message, stage="queued", retryable=True)
        self.retry_after_s = retry_after_s


def check_image_decodes(request):
    """Refuse an inline image (or view) that is not a readable picture at submission, not minutes later."""
    from PIL import Image, UnidentifiedImageError

    inline = [("image", request.image)] + [("views.%s" % name, source.get("image"))
                                           for name, source in sorted((request.views or {}).items())]
    for field, text in inline:
        if not text:
            continue
        try:
            with Image.open(io.BytesIO(decode_base64_image(text))) as image:
                image.verify()
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
            raise invalid(field, "is not a PNG, JPEG or WebP image that can be read (the data may be cut short or "
                          "not an image); send the image file's bytes base64-encoded")


def check_quotas(store, quotas, owner, size):
    """Raise QueueFull when `owner` (an API key) or the whole server is over its quota (both schedulers)."""
    jobs, queued = store.active(owner)
    if owner is not None and jobs >= quotas.jobs_per_key:
        raise QueueFull("This API key already has %d jobs queued or running (the limit is %d). Wait for some to "
                        "finish, then submit again." % (jobs, quotas.jobs_per_key))
    if owner is not None and queued + size > quotas.bytes_per_key:
        raise QueueFull("This API key's waiting images already take %.0f MB (the limit is %.0f MB). Wait for "
                        "some jobs to finish or send smaller images." % (queued / 2 ** 20,
                                                                         quotas.bytes_per_key / 2 ** 20))
    _all_jobs, total = store.active()
    if total + size > quotas.bytes_total:
        raise QueueFull("The server's queue is full (%.0f MB of images waiting). Try again in a few minutes."
                        % (total / 2 ** 20), retry_after_s=60)


def record_submission(store, quotas, request_data, owner, lock):
    """The part of a submission both schedulers share: a new job id, its request checked (invalid input
    is recorded FAILED at once, its message cut by public_error, since it may quote 10 MB of input) and,
    under `lock` so two submissions cannot both squeeze under a quota, the quotas checked (QueueFull)
    and the job recorded IN_QUEUE. Returns (job_id, queued)."""
    job_id = new_job_id()
    try:
        request = parse_request(request_data, allow_path=False)
        check_image_decodes(request)
    except Gen3DError as exc:
        exc.stage = "queued"
        store.create_failed(job_id, public_error(exc.to_dict()["error"]))
        return job_id, False
    size = inline_image_size(request)
    with lock:
        check_quotas(store, quotas, owner, size)
        store.create(job_id, request_data, owner=owner)
    return job_id, True


class WaitsForJobs:
    """wait() for a scheduler whose `_cond` is notified whenever a job's state changes."""

    def wait(self, job_id, timeout):
        """Wait up to `timeout` seconds for a job to end; returns its latest state."""
        with self._cond:
            self._cond.wait_for(lambda: self._ended(job_id), timeout=timeout)
        return self.store.get(job_id)

    def _ended(self, job_id):
        job = self.store.get(job_id)
        return job is None or job.status in job_store.FINAL


class _Running:
    def __init__(self, job_id):
        self.job_id = job_id
        self.cancel = threading.Event()
        self.timed_out = False

    def time_out(self):
        self.timed_out = True
        self.cancel.set()


class Scheduler(WaitsForJobs):
    def __init__(self, store, storage, work_root, pipelines, job_timeout_s=3600, quotas=Quotas()):
        """`pipelines` maps a device name to its Pipeline (or DeviceProcess); each gets one worker thread."""
        self.store = store
        self.quotas = quotas
        self.storage = storage
        self.work_root = work_root
        self.pipelines = dict(pipelines)
        self.job_timeout_s = job_timeout_s
        self._queue = collections.deque()
        self._running = {}
        self._cond = threading.Condition()
        self._submit_lock = threading.Lock()
        self._stopping = False
        self._threads = []

    # lifecycle ------------------------------------------------------------------------------
    def start(self):
        interrupted = self.store.fail_interrupted(interrupted_error)
        if interrupted:
            log("%d job(s) were running when the server stopped; marked FAILED (retryable)" % len(interrupted))
        shutil.rmtree(self.work_root, ignore_errors=True)     # half-written results of those jobs
        os.makedirs(self.work_root, exist_ok=True)
        with self._cond:
            self._queue.extend(self.store.queued_ids())
        for device, pipeline in self.pipelines.items():
            if hasattr(pipeline, "start"):        # a DeviceProcess: its child loads the models meanwhile
                pipeline.start()
            thread = threading.Thread(target=self._work, args=(device, pipeline), name="gen3d-%s" % device,
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout=30):
        """Stop taking jobs. Running jobs are stopped and end FAILED (retryable), now or, if they do not
        stop in time, at the next start. Queued jobs stay queued in the store for the next start."""
        with self._cond:
            self._stopping = True
            for running in self._running.values():
                running.cancel.set()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        for pipeline in self.pipelines.values():
            if hasattr(pipeline, "close"):
                pipeline.close()

    # requests -------------------------------------------------------------------------------
    def submit(self, request_data, owner=None):
        """Queue a job; invalid input is recorded as FAILED straight away. Returns the job id.
        Raises QueueFull when `owner` (the API key) or the server is over its quota."""
        job_id, queued = record_submission(self.store, self.quotas, request_data, owner, self._submit_lock)
        if queued:
            with self._cond:
                self._queue.append(job_id)
                self._cond.notify_all()
        return job_id

    def cancel(self, job_id):
        """Cancel a queued or running job; a finished job is left as it is. Returns the job (or None)."""
        with self._cond:
            if job_id in self._queue:
                self._queue.remove(job_id)
            self.store.cancel(job_id)
            running = self._running.get(job_id)
            if running is not None:
                running.cancel.set()          # stops at the next step, or the device process is killed
            self._cond.notify_all()
        return self.store.get(job_id)

    def position(self, job_id):
        """How many queued jobs are ahead of `job_id` (None when it is not queued)."""
        with self._cond:
            return self._queue.index(job_id) if job_id in self._queue else None

    def workers(self):
        with self._cond:
            running = len(self._running)
        return {"idle": len(self.pipelines) - running, "running": running}

    # workers --------------------------------------------------------------------------------
    def _next(self, device):
        with self._cond:
            while True:
                if self._stopping:
                    return None
                while self._queue:
                    job_id = self._queue.popleft()
                    if self.store.claim(job_id, device):
                        running = self._running[job_id] = _Running(job_id)
                        return running
                self._cond.wait()

    def _work(self, device, pipeline):
        while True:
            running = self._next(device)
            if running is None:
                return
            try:
                self._run(running, pipeline)
            except Exception as exc:          # keep the device serving whatever one job did
                traceback.print_exc(file=sys.stderr)
                self.store.fail(running.job_id, Gen3DError(INTERNAL, "The server failed while running this job (%s)."
                                                           " Try again." % exc).to_dict()["error"])
            finally:
                with self._cond:
                    self._running.pop(running.job_id, None)
                    self._cond.notify_all()

    def _run(self, running, pipeline):
        job_id = running.job_id
        request = parse_request(self.store.request(job_id), allow_path=False)
        self.store.set_progress(job_id, progress_event(job_id, "preprocess", 0.0, "starting"))
        timer = threading.Timer(self.job_timeout_s, running.time_out)
        timer.daemon = True
        timer.start()
        started = time.monotonic()
        try:
            manifest = execute_job(pipeline, self.storage, request, job_id, self.work_root,
                                   on_progress=lambda event: self.store.set_progress(job_id, event),
                                   cancel=running.cancel)
        except Gen3DError as exc:
            if exc.code == CANCELLED and running.timed_out:
                outcome = "timed out during %s" % exc.stage
                self.store.fail(job_id, Gen3DError(
                    TIMEOUT, "The job ran longer than the server's limit of %g s. Lower the quality settings or ask "
                    "the server's admin to raise --job-timeout." % self.job_timeout_s, stage=exc.stage,
                    retryable=False).to_dict()["error"], status=job_store.TIMED_OUT)
            elif exc.code == CANCELLED and self._stopping:
                outcome = "interrupted by shutdown during %s" % exc.stage
                self.store.fail(job_id, interrupted_error(self.store.get(job_id)))
            elif exc.code == CANCELLED:
                outcome = "stopped during %s after a cancel" % exc.stage
                self.store.cancel(job_id)
            else:
                outcome = "failed: %s" % exc
                self.store.fail(job_id, exc.to_dict()["error"])
        else:
            if self.store.complete(job_id, manifest):
                outcome = "completed"
            else:
                outcome = "finished after a cancel; result dropped"
                self.storage.delete(job_id)
        finally:
            timer.cancel()
        log("job %s %s (%.1f s)" % (job_id, outcome, time.monotonic() - started))
