"""The self-hosted server's jobs in SQLite, so a restart (or a crash) loses nothing.

Every change is committed as it happens. A state change only applies from the state it expects
(e.g. complete() only from IN_PROGRESS), so a cancel that lands while a job finishes cannot be
overwritten. The request (with its base64 image) lives in its own table and is dropped as soon as
the job ends.
"""

import contextlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass

IN_QUEUE = "IN_QUEUE"
IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TIMED_OUT = "TIMED_OUT"
FINAL = (COMPLETED, FAILED, CANCELLED, TIMED_OUT)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    device TEXT,
    progress TEXT,
    output TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status, created_at);
CREATE TABLE IF NOT EXISTS job_requests (
    id TEXT PRIMARY KEY,
    request TEXT NOT NULL
);
"""


@dataclass
class Job:
    id: str
    status: str
    created_at: float
    started_at: float = None
    finished_at: float = None
    device: str = None
    progress: dict = None
    output: dict = None
    error: dict = None

    def delay_ms(self, now):
        """RunPod's delayTime: time spent waiting in the queue (so far)."""
        left_queue = self.started_at or (self.finished_at if self.status in FINAL else now)
        return int(round((left_queue - self.created_at) * 1000))

    def execution_ms(self, now):
        """RunPod's executionTime: time spent running (so far)."""
        if self.started_at is None:
            return 0
        return int(round(((self.finished_at or now) - self.started_at) * 1000))


def _loads(text):
    return json.loads(text) if text else None


class JobStore:
    def __init__(self, path, clock=time.time):
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self):
        with self._lock:
            self._db.close()

    def _execute(self, sql, params=()):
        with self._lock:
            return self._db.execute(sql, params)

    @contextlib.contextmanager
    def _transaction(self):
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _change(self, sql, params):
        """Run an UPDATE/DELETE; True when it changed a row."""
        with self._lock:
            return self._db.execute(sql, params).rowcount > 0

    # creating and reading -------------------------------------------------------------------
    def create(self, job_id, request):
        now = self.clock()
        with self._transaction() as db:
            db.execute("INSERT INTO jobs (id, status, created_at) VALUES (?, ?, ?)", (job_id, IN_QUEUE, now))
            db.execute("INSERT INTO job_requests (id, request) VALUES (?, ?)", (job_id, json.dumps(request)))

    def create_failed(self, job_id, error):
        """A job refused at submission (invalid input): recorded so /status answers for it."""
        now = self.clock()
        self._execute("INSERT INTO jobs (id, status, created_at, finished_at, error) VALUES (?, ?, ?, ?, ?)",
                      (job_id, FAILED, now, now, json.dumps(error)))

    def get(self, job_id):
        row = self._execute("SELECT id, status, created_at, started_at, finished_at, device, progress, output, error "
                            "FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return Job(*row[:6], progress=_loads(row[6]), output=_loads(row[7]), error=_loads(row[8]))

    def request(self, job_id):
        row = self._execute("SELECT request FROM job_requests WHERE id = ?", (job_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def queued_ids(self):
        rows = self._execute("SELECT id FROM jobs WHERE status = ? ORDER BY created_at, rowid", (IN_QUEUE,))
        return [row[0] for row in rows.fetchall()]

    def counts(self):
        rows = self._execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {status: count for status, count in rows}

    # state changes ----------------------------------------------------------------------------
    def claim(self, job_id, device):
        """IN_QUEUE -> IN_PROGRESS; False when the job was cancelled meanwhile."""
        return self._change("UPDATE jobs SET status = ?, started_at = ?, device = ? WHERE id = ? AND status = ?",
                            (IN_PROGRESS, self.clock(), device, job_id, IN_QUEUE))

    def set_progress(self, job_id, event):
        return self._change("UPDATE jobs SET progress = ? WHERE id = ? AND status = ?",
                            (json.dumps(event), job_id, IN_PROGRESS))

    def _finish(self, job_id, status, output=None, error=None, from_statuses=(IN_PROGRESS,)):
        marks = ",".join("?" * len(from_statuses))
        with self._transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET status = ?, finished_at = ?, output = ?, error = ? WHERE id = ? AND status IN (%s)"
                % marks, (status, self.clock(), json.dumps(output) if output is not None else None,
                          json.dumps(error) if error is not None else None, job_id) + tuple(from_statuses)).rowcount
            if changed:
                db.execute("DELETE FROM job_requests WHERE id = ?", (job_id,))
        return changed > 0

    def complete(self, job_id, manifest):
        return self._finish(job_id, COMPLETED, output=manifest)

    def fail(self, job_id, error, status=FAILED):
        return self._finish(job_id, status, error=error)

    def cancel(self, job_id):
        """IN_QUEUE or IN_PROGRESS -> CANCELLED; False when the job had already ended."""
        return self._finish(job_id, CANCELLED, from_statuses=(IN_QUEUE, IN_PROGRESS))

    def fail_interrupted(self, error_for):
        """Jobs left IN_PROGRESS by a crash or a kill become FAILED with `error_for(job)`. Returns their ids."""
        ids = [row[0] for row in self._execute("SELECT id FROM jobs WHERE status = ?", (IN_PROGRESS,)).fetchall()]
        return [job_id for job_id in ids if self.fail(job_id, error_for(self.get(job_id)))]

    # retention ----------------------------------------------------------------------------------
    def finished_before(self, cutoff):
        rows = self._execute("SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?", (cutoff,))
        return [row[0] for row in rows.fetchall()]

    def delete(self, job_id):
        with self._transaction() as db:
            db.execute("DELETE FROM job_requests WHERE id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
