"""The server's side of farm mode (`serve --queue redis://...`), in place of the in-process Scheduler.

The SQLite job store stays the truth for /status, progress and cancel; Celery carries the work:

- dispatcher thread: every IN_QUEUE job not yet handed to Celery is sent (task id = job id) and
  noted in a small ledger (`farm.sqlite3` beside the job store), so a job accepted while Redis is
  down, or just before the server died, is sent when the queue is back; cancels are passed on the
  same way (a `gen3d:cancel:<id>` flag the running job watches, and Celery's revocation for a job
  still queued); a job running past --job-timeout (plus a grace for the worker's own limit) is
  marked TIMED_OUT;
- events thread: reads the workers' stream with a consumer group and applies started, progress and
  outcome events to the store, acknowledging each only once applied, so a server restart resumes
  where it stopped; outcomes are also read from their own keys now and then, in case the stream was
  trimmed.

Store transitions only apply from the state they expect, so late, repeated or out-of-date events
(a job delivered twice, a result that arrives after a cancel) change nothing.
"""

import json
import os
import sqlite3
import sys
import threading
import time

from shared.errors import TIMEOUT, Gen3DError

from .. import job_store
from ..scheduler import Quotas, WaitsForJobs, record_submission
from . import config

EVENTS_BATCH = 200
CONSUMER = "server"
RECONCILE_S = 5.0


def log(message):
    print("[gen3d] %s" % message, file=sys.stderr, flush=True)


class Ledger:
    """Which jobs were handed to Celery, and which cancels were passed on (survives restarts)."""

    def __init__(self, path):
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS dispatch (job_id TEXT PRIMARY KEY, dispatched_at REAL, "
                         "cancel_wanted INTEGER NOT NULL DEFAULT 0, cancel_sent INTEGER NOT NULL DEFAULT 0, "
                         "finished INTEGER NOT NULL DEFAULT 0)")

    def _run(self, sql, params=()):
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def dispatched_ids(self):
        return {row[0] for row in self._run("SELECT job_id FROM dispatch WHERE dispatched_at IS NOT NULL")}

    def mark_dispatched(self, job_id):
        self._run("INSERT INTO dispatch (job_id, dispatched_at) VALUES (?, ?) ON CONFLICT(job_id) DO UPDATE SET "
                  "dispatched_at = excluded.dispatched_at", (job_id, time.time()))

    def want_cancel(self, job_id):
        self._run("UPDATE dispatch SET cancel_wanted = 1 WHERE job_id = ?", (job_id,))

    def cancels_to_send(self):
        return [row[0] for row in self._run("SELECT job_id FROM dispatch WHERE cancel_wanted = 1 AND cancel_sent = 0")]

    def mark_cancel_sent(self, job_id):
        self._run("UPDATE dispatch SET cancel_sent = 1 WHERE job_id = ?", (job_id,))

    def in_flight(self):
        return [row[0] for row in self._run("SELECT job_id FROM dispatch WHERE finished = 0 AND dispatched_at IS NOT "
                                            "NULL")]

    def mark_finished(self, job_id):
        self._run("UPDATE dispatch SET finished = 1 WHERE job_id = ?", (job_id,))

    def forget(self, job_id):
        self._run("DELETE FROM dispatch WHERE job_id = ?", (job_id,))

    def close(self):
        with self._lock:
            self._db.close()


class FarmScheduler(WaitsForJobs):
    def __init__(self, store, storage, queue_url, data_dir, job_timeout_s=3600, quotas=Quotas()):
        self.store = store
        self.quotas = quotas
        self.storage = storage
        self.queue_url = config.check_queue_url(queue_url)
        self.job_timeout_s = float(job_timeout_s)
        self.app = config.celery_app(queue_url)
        self.client = config.redis_client(queue_url)
        self.ledger = Ledger(os.path.join(data_dir, "farm.sqlite3"))
        self._cond = threading.Condition()
        self._submit_lock = threading.Lock()
        self._stopping = threading.Event()
        # set once the events loop has read the stream to its end since this start: until then an outcome
        # key may be ahead of its own "started" event, and the sweep would record the job without its worker
        self._caught_up = threading.Event()
        self._threads = []
        self._down_since = {}

    # lifecycle ------------------------------------------------------------------------------
    def start(self):
        for target, name in ((self._dispatch_loop, "gen3d-dispatch"), (self._events_loop, "gen3d-events")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout=10):
        """Stop dispatching and reading events; jobs on the workers carry on, and their events wait in
        the stream for the next start."""
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
        self.ledger.close()

    # requests -------------------------------------------------------------------------------
    def submit(self, request_data, owner=None):
        """As Scheduler.submit: invalid input is FAILED at once, quotas raise QueueFull."""
        job_id, queued = record_submission(self.store, self.quotas, request_data, owner, self._submit_lock)
        if queued:
            with self._cond:
                self._cond.notify_all()       # the dispatcher sends it now
        return job_id

    def cancel(self, job_id):
        if self.store.cancel(job_id):
            self.ledger.want_cancel(job_id)   # only dispatched jobs have a row; the rest never leave
            with self._cond:
                self._cond.notify_all()
        return self.store.get(job_id)

    def position(self, job_id):
        queued = self.store.queued_ids()
        return queued.index(job_id) if job_id in queued else None

    def workers(self):
        """Workers seen through their heartbeat keys in the last few seconds."""
        try:
            keys = list(self.client.scan_iter(match=config.WORKER_KEY_PATTERN, count=1000))
            beats = [json.loads(text) for text in (self.client.mget(keys) if keys else []) if text]
        except Exception:
            return {"idle": 0, "running": 0, "queue": "unreachable"}
        running = sum(1 for beat in beats if beat.get("job"))
        return {"idle": len(beats) - running, "running": running, "queue": "redis"}

    # dispatching ----------------------------------------------------------------------------
    def _warn_down(self, what, exc):
        if what not in self._down_since:
            self._down_since[what] = time.monotonic()
            log("queue unreachable while trying to %s (%s); retrying" % (what, exc))

    def _back_up(self, what):
        since = self._down_since.pop(what, None)
        if since is not None:
            log("queue reachable again (%s, after %.1f s)" % (what, time.monotonic() - since))

    def _dispatch_loop(self):
        last_sweep = 0.0
        while not self._stopping.is_set():
            healthy = self._dispatch_queued() and self._send_cancels()
            if time.monotonic() - last_sweep >= RECONCILE_S:
                last_sweep = time.monotonic()
                self._sweep()
            with self._cond:
                self._cond.wait(1.0 if healthy else 0.5)

    def _dispatch_queued(self):
        queued = self.store.queued_ids()
        if not queued:
            return True
        dispatched = self.ledger.dispatched_ids()
        for job_id in queued:
            if job_id in dispatched or self._stopping.is_set():
                continue
            request = self.store.request(job_id)
            if request is None:
                continue                      # cancelled meanwhile
            try:
                self.app.send_task(config.TASK_NAME, args=(job_id, request), task_id=job_id,
                                   queue=config.QUEUE_NAME, retry=False)
            except Exception as exc:
                self._warn_down("send jobs", exc)
                return False
            self._back_up("send jobs")
            self.ledger.mark_dispatched(job_id)
            if self.store.get(job_id).status == job_store.CANCELLED:
                self.ledger.want_cancel(job_id)     # cancelled while it was being sent
        return True

    def _send_cancels(self):
        for job_id in self.ledger.cancels_to_send():
            try:
                self.client.set(config.cancel_key(job_id), "1", ex=config.outcome_ttl_s())
                self.app.control.revoke(job_id)
            except Exception as exc:
                self._warn_down("pass on cancels", exc)
                return False
            self._back_up("pass on cancels")
            self.ledger.mark_cancel_sent(job_id)
        return True

    def _sweep(self):
        """Outcomes the stream did not bring (trimmed), jobs past their deadline, finished rows."""
        in_flight = self.ledger.in_flight()
        if not in_flight:
            return
        try:
            outcomes = self.client.mget([config.outcome_key(job_id) for job_id in in_flight])
        except Exception as exc:
            self._warn_down("read outcomes", exc)
            outcomes = [None] * len(in_flight)
        now = self.store.clock()
        for job_id, text in zip(in_flight, outcomes):
            job = self.store.get(job_id)
            if job is None:
                self.ledger.forget(job_id)
            elif text:
                if self._caught_up.is_set():     # else the stream brings it, with the worker's name
                    self._apply_outcome(job_id, None, json.loads(text))
            elif job.status in job_store.FINAL:
                self.ledger.mark_finished(job_id)
            elif job.status == job_store.IN_PROGRESS and now - job.started_at > self.job_timeout_s + config.kill_grace_s():
                error = Gen3DError(TIMEOUT, "The job ran longer than the server's limit of %g s. Lower the quality "
                                   "settings or ask the server's admin to raise --job-timeout." % self.job_timeout_s,
                                   stage=(job.progress or {}).get("stage"), retryable=False)
                if self.store.fail(job_id, error.to_dict()["error"], status=job_store.TIMED_OUT):
                    log("job %s timed out on its worker; stopping it" % job_id)
                    self.ledger.want_cancel(job_id)
                    self._notify()

    def _notify(self):
        with self._cond:
            self._cond.notify_all()

    # events ---------------------------------------------------------------------------------
    def _ensure_group(self):
        import redis

        try:
            self.client.xgroup_create(config.EVENTS_STREAM, config.EVENTS_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _events_loop(self):
        backlog = True                        # first the events read but not acknowledged before a restart
        grouped = False
        while not self._stopping.is_set():
            try:
                if not grouped:
                    self._ensure_group()
                    grouped = True
                replies = self.client.xreadgroup(config.EVENTS_GROUP, CONSUMER,
                                                 {config.EVENTS_STREAM: "0" if backlog else ">"},
                                                 count=EVENTS_BATCH, block=None if backlog else 1000)
                self._back_up("read events")
                entries = [entry for _stream, items in (replies or []) for entry in items]
                for entry_id, fields in entries:
                    if fields:                # an entry trimmed away since it was read has no fields
                        self._apply(fields)
                    self.client.xack(config.EVENTS_STREAM, config.EVENTS_GROUP, entry_id)
                if backlog and not entries:
                    backlog = False
                elif not backlog and len(entries) < EVENTS_BATCH:
                    # read to the stream's end (a short batch) and applied: only now may the sweep apply an
                    # outcome key, or it could beat this batch's started event and record no worker
                    self._caught_up.set()
            except Exception as exc:
                self._warn_down("read events", exc)
                backlog, grouped = True, False   # a restarted Redis may have lost the group
                self._stopping.wait(0.5)

    def _apply(self, fields):
        kind, job_id, worker = fields.get("kind"), fields.get("job_id"), fields.get("worker")
        try:
            body = json.loads(fields.get("body") or "{}")
        except ValueError:
            return
        job = self.store.get(job_id) if job_id else None
        if job is None:
            return                            # expired and cleaned up, or not ours
        if kind == "started":
            if self.store.claim(job_id, worker):
                log("job %s started on %s" % (job_id, worker))
            elif job.status == job_store.IN_PROGRESS:
                log("job %s delivered again, to %s (delivery %s)" % (job_id, worker, body.get("delivery")))
        elif kind == "progress":
            current = (job.progress or {}).get("progress", 0.0)
            if job.status == job_store.IN_PROGRESS and body.get("progress", 0.0) >= current:
                self.store.set_progress(job_id, body)   # a second delivery starts again at 0: keep the bar
        elif kind == "outcome":
            self._apply_outcome(job_id, worker, body)

    def _apply_outcome(self, job_id, worker, outcome):
        status = outcome.get("status")
        job = self.store.get(job_id)
        if job is None:
            return
        if job.status == job_store.IN_QUEUE and status != job_store.CANCELLED:
            self.store.claim(job_id, worker or "farm")
        if status == job_store.COMPLETED:
            if not self.store.complete(job_id, outcome["manifest"]) and \
                    self.store.get(job_id).status == job_store.CANCELLED:
                log("job %s finished after a cancel; result dropped" % job_id)
                try:
                    self.storage.delete(job_id)
                except Gen3DError as exc:
                    log("could not delete the result of %s: %s" % (job_id, exc.message))
        elif status in (job_store.FAILED, job_store.TIMED_OUT):
            self.store.fail(job_id, outcome.get("error"), status=status)
        elif status == job_store.CANCELLED:
            self.store.cancel(job_id)
        self.ledger.mark_finished(job_id)
        self._notify()
