"""The job queue: jobs run one after another on a background thread; their events wait on a queue
until the main thread drains it with pump(). No bpy here, so Blender's timer (session.py) and the
headless batch (batch.py) drive the very same code.

Only the main thread changes Job objects: the job thread reads what a job needs to run (request,
folder, cancel flag) and reports everything else as events.
"""

import collections
import os
import queue
import re
import sys
import threading
import time
import traceback
import uuid

from .clients import check_policy, make_client
from .contract import Gen3DError, errors, request as contract_request

QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED = "QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED"
ACTIVE = (QUEUED, RUNNING)


class Job:
    def __init__(self, job_id, name, image_path, request, job_dir, settings, client):
        self.job_id = job_id
        self.name = name                  # the object's name: the input image's stem
        self.image_path = image_path
        self.request = request            # wire dict, validated
        self.job_dir = job_dir
        self.settings = settings          # BackendSettings it runs with
        self.client = client
        self.cancel_event = threading.Event()
        self.status = QUEUED
        self.stage = "queued"
        self.progress = 0.0
        self.message = "waiting"
        self.error = None                 # the contract's error dict when FAILED
        self.created = time.time()
        self.started = None
        self.finished = None
        self.data = {}                    # free for the caller (e.g. where the result was imported)

    @property
    def active(self):
        return self.status in ACTIVE

    @property
    def cancelling(self):
        return self.active and self.cancel_event.is_set()

    @property
    def seconds(self):
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started


def safe_name(text):
    text = re.sub(r"[^\w.-]+", "_", text, flags=re.UNICODE).strip("._")
    return text[:48] or "image"


def new_job_dir(output_dir, name, job_id):
    return os.path.join(output_dir, "%s-%s-%s" % (safe_name(name), time.strftime("%Y%m%d-%H%M%S"), job_id[:6]))


class JobManager:
    def __init__(self, client_factory=make_client):
        self.jobs = collections.OrderedDict()       # job_id -> Job, oldest first
        self.on_change = []                         # callables(job), main thread, after any update
        self.on_finished = []                       # callables(job), main thread, once per job
        self._client_factory = client_factory
        self._clients = {}                          # BackendSettings.client_key() -> JobClient
        self._pending = collections.deque()
        self._events = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._thread = None
        self._stopping = False

    # main thread -------------------------------------------------------------------------------
    def client_for(self, settings):
        key = settings.client_key()
        client = self._clients.get(key)
        if client is None:
            self.close_idle_clients()      # settings changed: the old worker is not needed any more
            client = self._clients[key] = self._client_factory(settings)
        return client

    def existing_client(self, settings):
        return self._clients.get(settings.client_key())

    def submit(self, name, image_path, request, settings, job_dir=None):
        """Queue a job. Raises Gen3DError, with nothing queued, when the request or settings are wrong."""
        request = dict(request, image_path=os.path.abspath(image_path))
        contract_request.parse_request(request, allow_path=True)
        if not settings.output_dir:
            raise Gen3DError(errors.STORAGE, "No output folder is set; choose one in the Gen3D add-on preferences.",
                             stage="queued", retryable=False)
        check_policy(settings)
        client = self.client_for(settings)
        client.check()
        try:
            os.makedirs(settings.output_dir, exist_ok=True)
        except OSError as exc:
            raise Gen3DError(errors.STORAGE, "Cannot create the output folder %s (%s). Choose another folder in the "
                             "Gen3D add-on preferences." % (settings.output_dir, exc.strerror or exc),
                             stage="queued", retryable=False)
        job_id = uuid.uuid4().hex[:16]
        job = Job(job_id, name, image_path, request, job_dir or new_job_dir(settings.output_dir, name, job_id),
                  settings, client)
        self.jobs[job_id] = job
        with self._cond:
            self._stopping = False
            self._pending.append(job)
            self._cond.notify()
        self._ensure_thread()
        self._changed(job)
        return job

    def cancel(self, job_id):
        job = self.jobs.get(job_id)
        if job is None or not job.active:
            return False
        job.cancel_event.set()
        with self._cond:
            queued = job in self._pending
            if queued:
                self._pending.remove(job)
        if queued:                                 # never started: cancelled right here
            self._apply(job, "cancelled", {"stage": "queued"})
            return True
        job.message = "cancelling"
        self._changed(job)
        return True

    def pump(self, budget_s=None):
        """Apply queued events on the calling (main) thread; stop after budget_s seconds.
        Returns the jobs that changed."""
        start = time.perf_counter()
        changed = []
        while budget_s is None or time.perf_counter() - start < budget_s:
            try:
                job_id, kind, data = self._events.get_nowait()
            except queue.Empty:
                break
            job = self.jobs.get(job_id)
            if job is not None and self._apply(job, kind, data) and job not in changed:
                changed.append(job)
        return changed

    def busy(self):
        return any(job.active for job in self.jobs.values()) or not self._events.empty()

    def active_jobs(self):
        return [job for job in self.jobs.values() if job.active]

    def wait(self, timeout=None, poll_s=0.05):
        """Pump until no job is active (headless use). False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.busy():
            self.pump()
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(poll_s)
        self.pump()
        return True

    def shutdown(self, timeout=3.0, finish_running=False):
        """Cancel everything, stop the job thread and close the clients (worker processes).
        finish_running (Blender exits): queued jobs are cancelled but the running ones are left to
        complete in their backend, which then exits; their result folders are imported next time."""
        with self._cond:
            self._stopping = True
            pending, self._pending = list(self._pending), collections.deque()
            self._cond.notify_all()
        for job in pending:
            self._apply(job, "cancelled", {"stage": "queued"})
        if finish_running:
            for client in list(self._clients.values()):
                client.detach()
            self._clients.clear()
            return
        for job in self.jobs.values():
            if job.active:
                job.cancel_event.set()
        for client in list(self._clients.values()):
            client.close()
        self._clients.clear()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self.pump()

    def close_idle_clients(self):
        """Close clients no active job uses (stops an idle worker and frees its memory)."""
        in_use = {id(job.client) for job in self.jobs.values() if job.active}
        for key, client in list(self._clients.items()):
            if id(client) not in in_use:
                client.close()
                del self._clients[key]

    def _apply(self, job, kind, data):
        if not job.active:
            return False                          # e.g. a late event after a cancel that won
        if kind == "started":
            job.status, job.started, job.message = RUNNING, data["time"], "starting"
        elif kind == "progress":
            job.stage = data.get("stage") or job.stage
            job.progress = max(job.progress, float(data.get("progress") or 0.0))
            job.message = data.get("message") or job.message
        else:
            job.finished = data.get("time", time.time())
            if job.started is None:
                job.started = job.finished
            if kind == "completed":
                job.status, job.progress, job.message = COMPLETED, 1.0, "done"
            elif kind == "cancelled":
                job.stage = data.get("stage") or job.stage
                job.status, job.message = CANCELLED, "during %s" % job.stage
            else:
                job.status, job.error = FAILED, data["error"]
                job.message = job.error.get("message") or "failed"
                job.stage = job.error.get("stage") or job.stage
        self._changed(job)
        if not job.active:
            for listener in list(self.on_finished):
                listener(job)
        return True

    def _changed(self, job):
        for listener in list(self.on_change):
            listener(job)

    # job thread --------------------------------------------------------------------------------
    def _ensure_thread(self):
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run_forever, name="gen3d-jobs", daemon=True)
            self._thread.start()

    def _run_forever(self):
        while True:
            with self._cond:
                while not self._pending and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                job = self._pending.popleft()
            self._run(job)

    def _post(self, job, kind, **data):
        self._events.put((job.job_id, kind, data))

    def _run(self, job):
        self._post(job, "started", time=time.time())

        def emit(event):
            self._events.put((job.job_id, "progress", event))

        try:
            job.client.run(job.job_id, dict(job.request), job.job_dir, emit, job.cancel_event)
        except Gen3DError as exc:
            if exc.code == errors.CANCELLED:
                self._post(job, "cancelled", stage=exc.stage, time=time.time())
            else:
                self._post(job, "failed", error=exc.to_dict()["error"], time=time.time())
        except Exception as exc:              # a client bug must not kill the queue
            traceback.print_exc(file=sys.stderr)
            error = Gen3DError(errors.INTERNAL, "The Gen3D add-on hit an unexpected error (%s: %s). Try again; if "
                               "it keeps failing, report it with the system console output." % (
                                   type(exc).__name__, exc), retryable=False)
            self._post(job, "failed", error=error.to_dict()["error"], time=time.time())
        else:
            self._post(job, "completed", time=time.time())
