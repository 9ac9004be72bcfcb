"""The server's job store (SQLite), queue, retention clean-up and API keys, without a running server."""

import os
import threading
import time

import pytest

from backend_remote import job_store
from backend_remote.auth import ApiKeys, load_api_keys
from backend_remote.disk_storage import DiskStorage
from backend_remote.retention import Janitor
from backend_remote.scheduler import Scheduler, interrupted_error
from backend_remote.signing import UrlSigner
from shared.errors import CANCELLED, INVALID_INPUT, Gen3DError
from shared.manifest import describe_files
from shared.progress import progress_event

from test_remote_support import sphere_request

pytest_plugins = ["test_remote_support"]


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_lifecycle_and_timings(tmp_path):
    clock = Clock()
    store = job_store.JobStore(str(tmp_path / "jobs.sqlite3"), clock=clock)
    store.create("a", {"image": "x"})
    assert store.get("a").status == job_store.IN_QUEUE and store.request("a") == {"image": "x"}
    clock.now += 2
    assert store.claim("a", "cpu")
    assert not store.claim("a", "cpu")                       # only once
    store.set_progress("a", {"stage": "shape", "progress": 0.3})
    clock.now += 5
    assert store.complete("a", {"files": {}})
    job = store.get("a")
    assert (job.status, job.device, job.progress["stage"]) == (job_store.COMPLETED, "cpu", "shape")
    assert (job.delay_ms(clock.now), job.execution_ms(clock.now)) == (2000, 5000)
    assert store.request("a") is None                        # the image is not kept once the job ended
    assert store.counts() == {job_store.COMPLETED: 1}


def test_cancel_wins_over_a_late_completion(tmp_path):
    store = job_store.JobStore(str(tmp_path / "jobs.sqlite3"))
    store.create("a", {})
    store.claim("a", "cpu")
    assert store.cancel("a")
    assert not store.complete("a", {"files": {}})            # the runner finished after Cancel
    assert not store.fail("a", {"code": "INTERNAL"})
    assert store.get("a").status == job_store.CANCELLED and not store.cancel("a")
    store.create("b", {})
    assert store.cancel("b") and not store.claim("b", "cpu")  # a cancelled queued job never starts


def test_restart_keeps_jobs_and_fails_interrupted_ones(tmp_path):
    path = str(tmp_path / "jobs.sqlite3")
    store = job_store.JobStore(path)
    for job_id in ("done", "running", "queued"):
        store.create(job_id, {"n": job_id})
    store.claim("done", "cpu")
    store.complete("done", {"files": {"mesh.glb": {}}})
    store.claim("running", "cpu")
    store.set_progress("running", {"stage": "texture", "progress": 0.5})
    store.close()                                            # as if the process died here

    reopened = job_store.JobStore(path)
    assert reopened.fail_interrupted(interrupted_error) == ["running"]
    running = reopened.get("running")
    assert running.status == job_store.FAILED
    assert running.error["retryable"] is True and running.error["stage"] == "texture"
    assert reopened.get("done").output == {"files": {"mesh.glb": {}}}
    assert reopened.queued_ids() == ["queued"] and reopened.request("queued") == {"n": "queued"}


def test_janitor_removes_expired_results(tmp_path):
    clock = Clock()
    store = job_store.JobStore(str(tmp_path / "jobs.sqlite3"), clock=clock)

    class Storage:
        deleted = []

        def delete(self, job_id):
            self.deleted.append(job_id)

    for job_id in ("old", "new", "queued"):
        store.create(job_id, {})
    store.claim("old", "cpu")
    store.complete("old", {})
    clock.now += 3000
    store.claim("new", "cpu")
    store.complete("new", {})
    clock.now += 700
    storage = Storage()
    assert Janitor(store, storage, retention_s=3600).sweep() == ["old"]
    assert storage.deleted == ["old"] and store.get("old") is None
    assert store.get("new") is not None and store.get("queued") is not None


def test_api_keys(tmp_path):
    keys = ApiKeys(["alpha-key", "beta-key"])
    assert keys.authorized("Bearer alpha-key") and keys.authorized("bearer beta-key")
    for header in (None, "", "Bearer", "Bearer wrong", "Basic alpha-key", "alpha-key", "Bearer alpha-ke",
                   "Bearer alpha-key2"):
        assert not keys.authorized(header), header
    path = tmp_path / "keys"
    path.write_text("# comment\n\n  alpha-key  \n")
    assert load_api_keys(str(path)).authorized("Bearer alpha-key")
    path.write_text("# only a comment\n")
    with pytest.raises(Gen3DError) as caught:
        load_api_keys(str(path))
    assert caught.value.code == INVALID_INPUT and "no key" in caught.value.message


# --- the scheduler, with a stand-in pipeline (no torch) ----------------------------------------
class FakePipeline:
    """Behaves like backend_local's Pipeline for the scheduler: progress, cancel, a result folder."""

    def __init__(self, seconds, log):
        self.seconds = seconds
        self.log = log                      # shared list of ("start"|"end", pipeline id, job id)
        self.lock = threading.Lock()

    def run(self, request, out_dir, job_id=None, on_progress=None, cancel=None):
        assert self.lock.acquire(blocking=False), "two jobs at once on one device"
        self.log.append(("start", id(self), job_id))
        try:
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline:
                if cancel.is_set():
                    raise Gen3DError(CANCELLED, "The job was cancelled.", stage="shape", retryable=False)
                on_progress(progress_event(job_id, "shape", 0.3, "working"))
                time.sleep(0.01)
            os.makedirs(out_dir)
            for name in ("mesh.glb", "input.png"):
                with open(os.path.join(out_dir, name), "wb") as handle:
                    handle.write(name.encode())
            return {"job_id": job_id, "files": describe_files(out_dir, ["mesh.glb", "input.png"]),
                    "timings": {"total": self.seconds, "upload": 0.0}}
        finally:
            self.log.append(("end", id(self), job_id))
            self.lock.release()


def make_scheduler(tmp_path, pipelines, job_timeout_s=60):
    store = job_store.JobStore(str(tmp_path / "jobs.sqlite3"))
    storage = DiskStorage(str(tmp_path / "results"), UrlSigner(b"k" * 32))
    scheduler = Scheduler(store, storage, str(tmp_path / "work"), pipelines, job_timeout_s)
    scheduler.start()
    return scheduler, store


def wait_status(store, job_id, statuses, timeout=20):
    deadline = time.monotonic() + timeout
    while store.get(job_id).status not in statuses:
        assert time.monotonic() < deadline, store.get(job_id)
        time.sleep(0.01)
    return store.get(job_id)


def test_one_job_at_a_time_per_device_in_order(tmp_path):
    log = []
    scheduler, store = make_scheduler(tmp_path, {"cuda:0": FakePipeline(0.2, log), "cuda:1": FakePipeline(0.2, log)})
    try:
        ids = [scheduler.submit(sphere_request()) for _ in range(5)]
        for job_id in ids:
            assert wait_status(store, job_id, job_store.FINAL).status == job_store.COMPLETED
        claimed = sorted(ids, key=lambda job_id: store.get(job_id).started_at)
        assert claimed == ids                                 # taken from the queue in submission order
        running, peak = 0, 0
        for kind, _p, _j in log:
            running += 1 if kind == "start" else -1
            peak = max(peak, running)
        assert peak == 2                                      # both devices busy, never more
        assert {store.get(job_id).device for job_id in ids} == {"cuda:0", "cuda:1"}
    finally:
        scheduler.stop()


def test_job_timeout_and_shutdown(tmp_path):
    scheduler, store = make_scheduler(tmp_path, {"cpu": FakePipeline(30, [])}, job_timeout_s=0.3)
    try:
        slow = scheduler.submit(sphere_request())
        job = wait_status(store, slow, job_store.FINAL)
        assert job.status == job_store.TIMED_OUT and job.error["code"] == "TIMEOUT" and job.error["stage"] == "shape"
        scheduler.job_timeout_s = 60
        running = scheduler.submit(sphere_request())
        queued = scheduler.submit(sphere_request())
        wait_status(store, running, (job_store.IN_PROGRESS,))
    finally:
        scheduler.stop()
    interrupted = store.get(running)
    assert interrupted.status == job_store.FAILED and interrupted.error["retryable"] is True
    assert store.get(queued).status == job_store.IN_QUEUE     # waits for the next start
