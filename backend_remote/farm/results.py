"""Worker side of the farm: events to the server and the one-time publication of each result.

A job may be delivered more than once (a lost worker, a Redis restart), so everything a delivery
does to the outside world is keyed by the job id:

- its outcome (COMPLETED with the manifest, FAILED, TIMED_OUT or CANCELLED) is written once, with
  SET NX, to `gen3d:outcome:<job_id>`; a later delivery finds it and only repeats it to the server;
- its files are uploaded by one delivery at a time, under a lock that its holder keeps renewing, and
  the outcome is written under that lock after meta.json (the storage's own last file). A delivery
  that died mid-upload leaves partial files that the next one overwrites; no delivery can publish a
  manifest that another delivery's files do not match.

Events go on a Redis stream that the server reads with a consumer group, so nothing is lost while
the server restarts. Progress is best effort (only the latest event matters); outcomes are retried
until Redis answers.
"""

import json
import sys
import threading
import time
import uuid

from shared.errors import CANCELLED, Gen3DError

from . import config

COMPLETED = "COMPLETED"
FAILED = "FAILED"
TIMED_OUT = "TIMED_OUT"
CANCELLED_STATUS = "CANCELLED"
LOCK_TTL_S = 30.0
RUNNING_TTL_S = 15.0

# Compare-and-act on the lock, so a delivery whose lock expired cannot renew or free another's.
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def log(message):
    print("[gen3d-worker] %s" % message, file=sys.stderr, flush=True)


def retry_redis(action, what, give_up=None, first_delay=0.2, max_delay=5.0):
    """Run `action()` until Redis answers (an outage of the broker must not lose an outcome)."""
    import redis

    delay = first_delay
    warned = False
    while True:
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if give_up is not None and give_up():
                raise
            if not warned:
                log("Redis unreachable while trying to %s (%s); retrying" % (what, exc))
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, max_delay)


class AlreadyFinished(Exception):
    """Another delivery of this job already recorded its outcome."""

    def __init__(self, outcome):
        super().__init__(outcome.get("status"))
        self.outcome = outcome


class Events:
    """The stream the server consumes: started, progress and outcome events, all keyed by job id."""

    def __init__(self, client, worker_name):
        self.client = client
        self.worker_name = worker_name

    def _add(self, kind, job_id, body):
        fields = {"kind": kind, "job_id": job_id, "worker": self.worker_name, "body": json.dumps(body)}
        return self.client.xadd(config.EVENTS_STREAM, fields, maxlen=config.EVENTS_MAXLEN, approximate=True)

    def started(self, job_id, delivery):
        retry_redis(lambda: self._add("started", job_id, {"delivery": int(delivery), "at": time.time()}),
                    "report that job %s started" % job_id)

    def progress(self, job_id, event):
        self._add("progress", job_id, event)        # the caller drops it when Redis is down

    def outcome(self, job_id, outcome):
        retry_redis(lambda: self._add("outcome", job_id, outcome), "report the outcome of job %s" % job_id)


class Outcomes:
    def __init__(self, client):
        self.client = client

    def get(self, job_id):
        text = retry_redis(lambda: self.client.get(config.outcome_key(job_id)), "read the outcome of %s" % job_id)
        return json.loads(text) if text else None

    def record(self, job_id, outcome):
        """Write the outcome unless one exists; returns the one that stands (ours or the earlier one)."""
        key = config.outcome_key(job_id)
        ttl = config.outcome_ttl_s()
        retry_redis(lambda: self.client.set(key, json.dumps(outcome), nx=True, ex=ttl),
                    "record the outcome of %s" % job_id)
        return self.get(job_id)

    def cancel_requested(self, job_id):
        return bool(self.client.exists(config.cancel_key(job_id)))


class Lease:
    """A Redis key held by one delivery while it works, renewed by a thread until released; it lapses
    by itself `ttl_s` after its holder vanished."""

    def __init__(self, client, key, ttl_s):
        self.client, self.key, self.ttl_ms = client, key, int(ttl_s * 1000)
        self.token = uuid.uuid4().hex
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._stopped = threading.Event()
        self._thread = None

    def acquire(self):
        taken = retry_redis(lambda: self.client.set(self.key, self.token, nx=True, px=self.ttl_ms),
                            "take %s" % self.key)
        if taken:
            self._thread = threading.Thread(target=self._keep, name="gen3d-lease", daemon=True)
            self._thread.start()
        return bool(taken)

    def _keep(self):
        while not self._stopped.wait(self.ttl_ms / 3000.0):
            try:
                self._renew(keys=[self.key], args=[self.token, self.ttl_ms])
            except Exception as exc:       # an outage: the lease may lapse; outcomes stay NX-guarded
                log("could not renew %s (%s)" % (self.key, exc))

    def release(self):
        self._stopped.set()
        try:
            self._release(keys=[self.key], args=[self.token])
        except Exception:
            pass                           # it lapses by itself


class PublishOnce:
    """A storage wrapper for execute_job: publish(...) uploads under the job's lock and records the
    COMPLETED outcome before letting go, or raises AlreadyFinished when another delivery got there
    first."""

    def __init__(self, storage, client, outcomes):
        self.storage = storage
        self.client = client
        self.outcomes = outcomes

    def publish(self, job_id, local_dir, manifest, on_progress=None, cancel=None):
        lock = Lease(self.client, config.publish_lock_key(job_id), LOCK_TTL_S)
        while True:
            finished = self.outcomes.get(job_id)
            if finished is not None:
                raise AlreadyFinished(finished)
            if lock.acquire():
                break
            if cancel is not None and cancel.is_set():
                raise Gen3DError(CANCELLED, "The job was cancelled.", stage="upload", retryable=False)
            time.sleep(0.25)           # another delivery is uploading; wait for its outcome or its lock to lapse
        try:
            finished = self.outcomes.get(job_id)
            if finished is not None:
                raise AlreadyFinished(finished)
            stored = self.storage.publish(job_id, local_dir, manifest, on_progress=on_progress, cancel=cancel)
            standing = self.outcomes.record(job_id, {"status": COMPLETED, "manifest": stored})
            if standing.get("status") != COMPLETED or standing.get("manifest") != stored:
                raise AlreadyFinished(standing)        # only if our lock lapsed during an outage
            return stored
        finally:
            lock.release()


class ProgressSender:
    """Sends progress events from a thread of its own, latest first: a slow or absent Redis never
    holds up the pipeline, and an event that cannot be sent is replaced by the next one."""

    def __init__(self, events, job_id):
        self.events = events
        self.job_id = job_id
        self._latest = None
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="gen3d-progress-%s" % job_id, daemon=True)
        self._thread.start()

    def send(self, event):
        with self._cond:
            self._latest = event
            self._cond.notify()

    def close(self, timeout=2.0):
        """Flush the last event (if Redis answers soon) and stop."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout)

    def _loop(self):
        while True:
            with self._cond:
                while self._latest is None and not self._closed:
                    self._cond.wait()
                event, self._latest = self._latest, None
                closed = self._closed
            if event is not None:
                try:
                    self.events.progress(self.job_id, event)
                except Exception:
                    pass               # best effort: the next event or the outcome follows
            if closed:
                return
