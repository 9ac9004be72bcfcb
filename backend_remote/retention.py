"""Results are kept for a configurable time after a job ends, then deleted with their job record."""

import sys
import threading


class Janitor:
    def __init__(self, store, storage, retention_s, interval_s=None):
        self.store = store
        self.storage = storage
        self.retention_s = float(retention_s)
        self.interval_s = float(interval_s or min(max(self.retention_s / 4, 1.0), 600.0))
        self._stop = threading.Event()
        self._thread = None

    def sweep(self):
        """Delete every job that ended more than `retention_s` ago. Returns their ids."""
        removed = []
        for job_id in self.store.finished_before(self.store.clock() - self.retention_s):
            try:
                self.storage.delete(job_id)
            except Exception as exc:      # storage down: keep the record and try again next sweep
                print("[gen3d] could not delete the result of %s: %s" % (job_id, exc), file=sys.stderr, flush=True)
                continue
            self.store.delete(job_id)
            removed.append(job_id)
        return removed

    def _loop(self):
        while not self._stop.wait(self.interval_s):
            self.sweep()

    def start(self):
        self.sweep()
        self._thread = threading.Thread(target=self._loop, name="gen3d-janitor", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
