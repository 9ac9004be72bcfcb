"""The self-hosted server's jobs in SQLite, so a restart (or a crash) loses nothing.

Every change is committed as it happens. A state change only applies from the state it expects
(e.g. complete() only from IN_PROGRESS), so a cancel that lands while a job finishes cannot be
overwritten. The request lives in its own table and its base64 image in a file of its own (so the
database stays small however large the images are); both are dropped as soon as the job ends.
"""

import contextlib
import json
import os
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
    def __init__(self, path, clock=time.time, inputs_dir=None):
        self.clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        for name, kind in (("owner", "TEXT"), ("input_bytes", "INTEGER NOT NULL DEFAULT 0")):
            if name not in columns:       # a database from before quotas
                self._db.execute("ALTER TABLE jobs ADD COLUMN %s %s" % (name, kind))
        self.inputs_dir = inputs_dir or os.path.join(os.path.dirname(os.path.abspath(path)), "inputs")
        os.makedirs(self.inputs_dir, exist_ok=True)
        self._drop_orphan_inputs()

    def _input_path(self, job_id):
        return os.path.join(self.inputs_dir, "%s.b64" % job_id)

    def _drop_input(self, job_id):
        try:
            os.remove(self._input_path(job_id))
        except OSError:
            pass

    def _drop_orphan_inputs(self):
        """Images of jobs that ended or were never recorded (a crash between the file and the row)."""
        live = {row[0] for row in self._db.execute("SELECT id FROM jobs WHERE status IN (?, ?)",
                                                   (IN_QUEUE, IN_PROGRESS))}
        for name in os.listdir(self.inputs_dir):
            if name.rsplit(".", 1)[0] not in live:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(self.inputs_dir, name))

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
    def create(self, job_id, request, owner=None):
        """Queue a job; its inline image (base64 text) goes to a file, the rest of the request to the DB."""
        now = self.clock()
        request = dict(request)
        image = request.pop("image", None)
        size = 0
        if isinstance(image, str) and image:
            path = self._input_path(job_id)
            with open(path + ".tmp", "w", encoding="utf-8") as handle:
                handle.write(image)
            os.replace(path + ".tmp", path)
            size = len(image)
        views = request.get("views")
        if isinstance(views, dict):    # inline extra views stay in the request row; they count too
            size += sum(len(v if isinstance(v, str) else (v or {}).get("image") or "") for v in views.values()
                        if isinstance(v, (str, dict)))
        try:
            with self._transaction() as db:
                db.execute("INSERT INTO jobs (id, status, created_at, owner, input_bytes) VALUES (?, ?, ?, ?, ?)",
                           (job_id, IN_QUEUE, now, owner, size))
                db.execute("INSERT INTO job_requests (id, request) VALUES (?, ?)", (job_id, json.dumps(request)))
        except BaseException:
            self._drop_input(job_id)
            raise

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
        if row is None:
            return None
        request = json.loads(row[0])
        try:
            with open(self._input_path(job_id), encoding="utf-8") as handle:
                request["image"] = handle.read()
        except FileNotFoundError:
            pass
        return request

    def active(self, owner=None):
        """(jobs, inline image bytes) queued or running, for one key or (None) for everyone."""
        sql = "SELECT COUNT(*), COALESCE(SUM(input_bytes), 0) FROM jobs WHERE status IN (?, ?)"
        params = (IN_QUEUE, IN_PROGRESS)
        if owner is not None:
            sql, params = sql + " AND owner = ?", params + (owner,)
        count, size = self._execute(sql, params).fetchone()
        return count, size

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
        if changed:
            self._drop_input(job_id)
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
        self._drop_input(job_id)
