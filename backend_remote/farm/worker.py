"""`python -m backend_remote worker --queue redis://... --storage s3://bucket/prefix [--device cuda:0]`

One Celery worker per GPU: a prefork pool of one process, which loads the pipeline once and keeps
its models between jobs. The pool process is what runs jobs, so when it dies (killed, out of host
memory) Celery's parent notices and puts the job back on the queue at once
(task_reject_on_worker_lost); when the whole machine is lost, the job comes back after the
visibility timeout. Either way the next delivery finds the job's outcome if it was already
recorded, and only repeats it; while another delivery of the job still holds its running lease
(Celery also redelivers running jobs after a broker connection loss), it waits instead of running
the job a second time.

Cancel reaches a running job through `gen3d:cancel:<job_id>` (set by the server, watched here a few
times a second) and a queued one through Celery's revocation as well.
"""

import json
import os
import re
import socket
import sys
import tempfile
import threading
import time
import traceback

from shared.errors import CANCELLED, INTERNAL, TIMEOUT, Gen3DError
from shared.request import parse_request

from ..execute import execute_job
from ..storage import check_job_id
from . import config
from .results import (CANCELLED_STATUS, COMPLETED, FAILED, RUNNING_TTL_S, TIMED_OUT, AlreadyFinished, Events, Lease,
                      Outcomes, ProgressSender, PublishOnce, log, retry_redis)

CANCEL_POLL_S = 0.25
HEARTBEAT_S = 5.0


def deliveries_key(job_id):
    return "gen3d:deliveries:%s" % job_id


class WorkerSettings:
    def __init__(self, queue_url, storage_spec, device, job_timeout_s, name, work_dir):
        self.queue_url = queue_url
        self.storage_spec = storage_spec
        self.device = device
        self.job_timeout_s = float(job_timeout_s)
        self.name = name
        self.work_dir = work_dir


class Heartbeat(threading.Thread):
    """`gen3d:worker:<name>` with a short expiry: what the server's /health counts."""

    def __init__(self, client, settings, device):
        super().__init__(name="gen3d-heartbeat", daemon=True)
        self.client = client
        self.key = config.worker_key(settings.name)
        self.body = {"name": settings.name, "device": device, "pid": os.getpid(), "job": None}
        self.wake = threading.Event()

    def set_job(self, job_id):
        self.body["job"] = job_id
        self.wake.set()

    def run(self):
        while True:
            try:
                self.client.set(self.key, json.dumps(dict(self.body, at=time.time())), ex=int(HEARTBEAT_S * 3))
            except Exception:
                pass               # Redis down: the key lapses and /health shows the worker gone
            self.wake.wait(HEARTBEAT_S)
            self.wake.clear()


class JobRunner:
    """Lives in the pool process: the pipeline (models loaded once), storage and Redis."""

    def __init__(self, settings):
        from backend_local.pipeline import Pipeline

        from ..storage import S3Config, S3Storage

        self.settings = settings
        self.client = config.redis_client(settings.queue_url)
        self.events = Events(self.client, settings.name)
        self.outcomes = Outcomes(self.client)
        self.storage = S3Storage(S3Config.from_env(spec=settings.storage_spec))
        self.pipeline = Pipeline(settings.device)
        os.makedirs(settings.work_dir, exist_ok=True)
        self.heartbeat = Heartbeat(self.client, settings, str(self.pipeline.device))
        self.heartbeat.start()
        log("%s ready on %s (pid %d)" % (settings.name, self.pipeline.device, os.getpid()))

    def run(self, job_id, request_data):
        check_job_id(job_id)
        lease = Lease(self.client, config.running_key(job_id), RUNNING_TTL_S)
        waited = False
        while True:
            finished = self.outcomes.get(job_id)
            if finished is not None:       # delivered again after its outcome was recorded
                log("job %s already ended (%s); repeating its outcome" % (job_id, finished["status"]))
                self.events.outcome(job_id, finished)
                return finished["status"]
            if lease.acquire():
                break
            if not waited:                 # e.g. Celery redelivers running jobs after a broker blip
                log("job %s is running on another delivery; waiting for its outcome, or for it to vanish" % job_id)
                waited = True
            time.sleep(1.0)
        try:
            return self._run_leased(job_id, request_data)
        finally:
            lease.release()

    def _run_leased(self, job_id, request_data):
        if retry_redis(lambda: self.outcomes.cancel_requested(job_id), "read the cancel flag of %s" % job_id):
            return self._finish(job_id, {"status": CANCELLED_STATUS}, "cancelled before it started")
        delivery = retry_redis(lambda: self.client.incr(deliveries_key(job_id)), "count deliveries of %s" % job_id)
        retry_redis(lambda: self.client.expire(deliveries_key(job_id), config.outcome_ttl_s()), "expire counter")
        self.events.started(job_id, delivery)
        self.heartbeat.set_job(job_id)
        started = time.monotonic()
        try:
            outcome = self._execute(job_id, request_data)
        finally:
            self.heartbeat.set_job(None)
        return self._finish(job_id, outcome, "delivery %d, %.1f s" % (delivery, time.monotonic() - started))

    def _finish(self, job_id, outcome, note):
        standing = self.outcomes.record(job_id, outcome)
        self.events.outcome(job_id, standing)
        log("job %s %s (%s)" % (job_id, standing["status"], note))
        return standing["status"]

    def _execute(self, job_id, request_data):
        cancel = threading.Event()
        timed_out = threading.Event()
        done = threading.Event()

        def watch_cancel():
            while not done.wait(CANCEL_POLL_S):
                try:
                    if self.outcomes.cancel_requested(job_id):
                        cancel.set()
                        return
                except Exception:
                    pass           # Redis down: look again; the server has the job CANCELLED already

        def time_out():
            timed_out.set()
            cancel.set()

        watcher = threading.Thread(target=watch_cancel, name="gen3d-cancel-%s" % job_id, daemon=True)
        watcher.start()
        timer = threading.Timer(self.settings.job_timeout_s, time_out)
        timer.daemon = True
        timer.start()
        sender = ProgressSender(self.events, job_id)
        try:
            request = parse_request(request_data, allow_path=False)
            manifest = execute_job(self.pipeline, PublishOnce(self.storage, self.client, self.outcomes), request,
                                   job_id, self.settings.work_dir, on_progress=sender.send, cancel=cancel)
            return {"status": COMPLETED, "manifest": manifest}
        except AlreadyFinished as exc:
            return exc.outcome
        except Gen3DError as exc:
            if exc.code == CANCELLED and timed_out.is_set():
                error = Gen3DError(TIMEOUT, "The job ran longer than the worker's limit of %g s. Lower the quality "
                                   "settings or ask the farm's admin to raise --job-timeout."
                                   % self.settings.job_timeout_s, stage=exc.stage, retryable=False)
                return {"status": TIMED_OUT, "error": error.to_dict()["error"]}
            if exc.code == CANCELLED:
                return {"status": CANCELLED_STATUS}
            return {"status": FAILED, "error": exc.to_dict()["error"]}
        except Exception as exc:           # a contract error for the server, never a traceback
            traceback.print_exc(file=sys.stderr)
            error = Gen3DError(INTERNAL, "The worker %s failed unexpectedly (%s: %s). Try again." %
                               (self.settings.name, type(exc).__name__, exc), retryable=True)
            return {"status": FAILED, "error": error.to_dict()["error"]}
        finally:
            done.set()
            timer.cancel()
            sender.close()


_settings = None
_runner = None
_runner_lock = threading.Lock()


def _get_runner():
    global _runner
    with _runner_lock:
        if _runner is None:
            _runner = JobRunner(_settings)
        return _runner


def build_app(settings):
    from celery import signals

    global _settings
    _settings = settings
    app = config.celery_app(settings.queue_url)
    # Celery's hard limit is the backstop for a job stuck where the cancel flag is never looked at.
    # Celery kills the pool process then and starts a fresh one, which loads the models again.
    app.conf.task_time_limit = settings.job_timeout_s + config.kill_grace_s()
    # The pool process loads the pipeline before it reports up; Celery's default 4 s is too short.
    app.conf.worker_proc_alive_timeout = 300

    @app.task(name=config.TASK_NAME)
    def run_job(job_id, request_data):
        return _get_runner().run(job_id, request_data)

    @signals.worker_process_init.connect(weak=False)
    def _load_models(**_kwargs):
        _get_runner()                      # in the pool process: models load before the first job

    return app


def default_name(device):
    return "gen3d-%s@%s" % (re.sub(r"[^A-Za-z0-9]+", "", device) or "auto", socket.gethostname())


def check_settings(settings):
    """Errors that would otherwise fail every job, reported before the worker starts."""
    from ..storage import S3Config, S3Storage

    config.check_queue_url(settings.queue_url)
    if not (settings.storage_spec or "").startswith("s3://"):
        raise ValueError("--storage must be s3://bucket/prefix in farm mode: the server hands out links to files "
                         "the workers upload, so they need storage they all share")
    visibility = config.visibility_timeout_s()
    if visibility <= settings.job_timeout_s:
        raise ValueError("GEN3D_FARM_VISIBILITY_S (%g s) must be longer than --job-timeout (%g s), or a running job "
                         "would be handed to a second worker" % (visibility, settings.job_timeout_s))
    storage = S3Storage(S3Config.from_env(spec=settings.storage_spec))
    try:
        storage.check()
    except Gen3DError as exc:
        log("warning: %s" % exc.message)


def main(args):
    settings = WorkerSettings(args.queue, args.storage, args.device, args.job_timeout,
                              args.name or default_name(args.device),
                              args.work_dir or os.path.join(tempfile.gettempdir(), "gen3d-farm-%d" % os.getpid()))
    try:
        check_settings(settings)
    except (Gen3DError, ValueError) as exc:
        print("error: %s" % (exc.message if isinstance(exc, Gen3DError) else exc), file=sys.stderr)
        return 2
    import backend_local.pipeline  # noqa: F401  imported once here, so a new pool process starts fast

    app = build_app(settings)
    app.worker_main(["worker", "--pool", "prefork", "--concurrency", "1", "--hostname", settings.name,
                     "--queues", config.QUEUE_NAME, "--without-gossip", "--without-heartbeat",
                     "--loglevel", args.log_level.upper()])
    return 0
