"""Farm mode end to end: a real redis-server, real Celery workers as separate processes, the server
(`serve --queue`) in a subprocess and S3 storage on a moto server, all on loopback.

The jobs are tiny builtin-engine jobs (about a second on an idle CPU, much more on the shared 2
cores). The workers run with a 110 s visibility timeout so a lost machine's job comes back within
the test. One test drives the server's scheduler itself against the redis-server, so that a race the
restart test only sometimes shows happens every time.
"""

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from farm_support import (FARM_ENV, HOOKED_PYTHONPATH, HOOKS_DIR, ROOT, RedisServer, WorkerProcess, job_events,
                          redis_server_binary)
from test_remote_support import BUCKET, ServerProcess, check_downloads, sphere_request, wait_for

pytest_plugins = ["test_remote_support"]

PREFIX = "farm"
STORAGE = "s3://%s/%s" % (BUCKET, PREFIX)
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
JOB_WAIT_S = 400             # generous: the 2 cores are shared with other work
TINY = {"face_count": 2000, "texture_size": 256, "octree_resolution": 64}


class Farm:
    def __init__(self, tmp, moto):
        if not redis_server_binary():
            pytest.fail("farm tests need Debian's redis-server (apt-get install redis-server, or scripts/setup.sh "
                        "with the remote extra as root)")
        self.tmp = str(tmp)
        self.moto = moto
        self.redis = RedisServer(os.path.join(self.tmp, "redis")).start()
        self.redis_client = self.redis.client()
        self.workers = {name: self._worker(name) for name in ("w1@farm", "w2@farm")}
        for worker in self.workers.values():
            worker.wait_ready(self.redis_client)
        self.server = ServerProcess(os.path.join(self.tmp, "server"), storage=STORAGE,
                                    env=dict(moto.env, **FARM_ENV), extra_args=["--queue", self.redis.url]).start()

    def _worker(self, name):
        # With tests/farm_hooks: the cancel and kill tests' seeds wait (listening to cancel) before they run.
        return WorkerProcess(self.redis.url, STORAGE, dict(self.moto.env, PYTHONPATH=HOOKED_PYTHONPATH), self.tmp,
                             name).start()

    def restart_worker(self, name):
        self.workers[name].kill()
        self.redis_client.delete("gen3d:worker:%s" % name)      # not the dead one's last beat
        self.workers[name] = self._worker(name).wait_ready(self.redis_client)

    def api(self):
        return self.server.client()

    def submit(self, api, **params):
        body = api.post("/run", json={"input": sphere_request(**dict(TINY, **params))}).json()
        assert body["status"] in ("IN_QUEUE", "IN_PROGRESS"), body
        return body["id"]

    def device(self, job_id):
        """The worker the server recorded for a job (its SQLite record, read-only)."""
        with sqlite3.connect("file:%s?mode=ro" % os.path.join(self.server.data_dir, "jobs.sqlite3"), uri=True) as db:
            row = db.execute("SELECT device FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row[0] if row else None

    def outcome(self, job_id):
        text = self.redis_client.get("gen3d:outcome:%s" % job_id)
        return json.loads(text) if text else None

    def check_one_result(self, job_id, body):
        """COMPLETED with every file sha-checked, and storage holding that one result and nothing else."""
        assert body["status"] == "COMPLETED", body
        manifest = body["output"]
        files = check_downloads(manifest)
        stored = json.loads(files["meta.json"])
        assert stored["files"] == {name: {k: v for k, v in info.items() if k != "url"}
                                   for name, info in manifest["files"].items()}
        expected = sorted("%s/%s/%s" % (PREFIX, job_id, name) for name in list(manifest["files"]) + ["meta.json"])
        assert self.moto.keys("%s/%s/" % (PREFIX, job_id)) == expected
        outcome = self.outcome(job_id)
        assert outcome["status"] == "COMPLETED" and outcome["manifest"]["files"] == stored["files"]
        return manifest

    def wait_in_progress(self, api, job_id, timeout=JOB_WAIT_S):
        body = wait_for(api, job_id, ("IN_PROGRESS",) + FINAL, timeout=timeout)
        assert body["status"] == "IN_PROGRESS", body
        return self.device(job_id)

    def stop(self):
        self.server.stop()
        for worker in self.workers.values():
            worker.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def farm(tmp_path_factory, moto_s3):
    farm = Farm(tmp_path_factory.mktemp("farm"), moto_s3)
    yield farm
    farm.stop()


def test_jobs_spread_over_both_workers_and_a_repeat_delivery_publishes_nothing_new(farm):
    with farm.api() as api:
        assert api.get("/health").json()["workers"] == {"idle": 2, "running": 0, "queue": "redis"}
        ids = [farm.submit(api, seed=seed) for seed in range(8)]
        bodies = {job_id: wait_for(api, job_id, FINAL, timeout=JOB_WAIT_S) for job_id in ids}
        for job_id, body in bodies.items():
            farm.check_one_result(job_id, body)
        assert {farm.device(job_id) for job_id in ids} == set(farm.workers)
        # Deliver one job again by hand, as a lost ack would: the worker repeats its outcome only.
        job_id = ids[0]
        before = {item["Key"]: item["ETag"] for item in farm.moto.s3.list_objects_v2(
            Bucket=BUCKET, Prefix="%s/%s/" % (PREFIX, job_id))["Contents"]}
        outcomes_before = [e for e in job_events(farm.redis_client, job_id) if e[0] == "outcome"]
        from backend_remote.farm.config import TASK_NAME, celery_app
        celery_app(farm.redis.url).send_task(TASK_NAME, args=(job_id, sphere_request(**TINY)), task_id=job_id)
        deadline = time.monotonic() + 120
        while len([e for e in job_events(farm.redis_client, job_id) if e[0] == "outcome"]) == len(outcomes_before):
            assert time.monotonic() < deadline, "the repeated delivery was not handled"
            time.sleep(0.2)
        events = job_events(farm.redis_client, job_id)
        assert [e[0] for e in events].count("started") == 1          # it did not run again
        assert events[-1][2] == outcomes_before[-1][2]               # the same outcome, repeated
        after = {item["Key"]: item["ETag"] for item in farm.moto.s3.list_objects_v2(
            Bucket=BUCKET, Prefix="%s/%s/" % (PREFIX, job_id))["Contents"]}
        assert after == before
        assert api.get("/status/%s" % job_id).json()["output"]["files"].keys() == \
            bodies[job_id]["output"]["files"].keys()


def test_cancel_reaches_running_and_queued_jobs_on_the_workers(farm):
    with farm.api() as api:
        # Seeds 100 and 101 are held (tests/farm_hooks) until cancelled or for 30 s, so a fast machine
        # cannot finish them before the cancel below reaches them.
        running = farm.submit(api, seed=100)
        other = farm.submit(api, seed=101)
        worker = farm.wait_in_progress(api, running)
        farm.wait_in_progress(api, other)
        queued = farm.submit(api, seed=102)           # both workers busy: it waits in Redis
        assert api.get("/status/%s" % queued).json()["status"] == "IN_QUEUE"
        assert api.post("/cancel/%s" % queued).json()["status"] == "CANCELLED"
        assert api.post("/cancel/%s" % running).json()["status"] == "CANCELLED"
        deadline = time.monotonic() + 60
        while not [e for e in job_events(farm.redis_client, running) if e[0] == "outcome"]:   # the worker stopped
            assert time.monotonic() < deadline, farm.outcome(running)
            time.sleep(0.1)
        assert [(e[1], e[2]["status"]) for e in job_events(farm.redis_client, running) if e[0] == "outcome"] == \
            [(worker, "CANCELLED")]
        assert farm.outcome(running) == {"status": "CANCELLED"}
        farm.check_one_result(other, wait_for(api, other, FINAL, timeout=JOB_WAIT_S))
        # The queued job reached a worker after `other` and was dropped without running.
        later = farm.submit(api, seed=103)
        farm.check_one_result(later, wait_for(api, later, FINAL, timeout=JOB_WAIT_S))
        assert "started" not in [e[0] for e in job_events(farm.redis_client, queued)]
        for job_id in (running, queued):
            assert api.get("/status/%s" % job_id).json()["status"] == "CANCELLED"
            assert farm.moto.keys("%s/%s/" % (PREFIX, job_id)) == []


def test_redis_outage_loses_nothing(farm):
    with farm.api() as api:
        before = [farm.submit(api, seed=200 + i) for i in range(4)]
        farm.wait_in_progress(api, before[0])
        farm.redis.stop()
        during = [farm.submit(api, seed=210 + i) for i in range(2)]     # accepted; sent when Redis is back
        assert api.get("/health").json()["workers"]["queue"] == "unreachable"
        for job_id in during:
            assert api.get("/status/%s" % job_id).json()["status"] == "IN_QUEUE"
        time.sleep(4)
        farm.redis.start()
        for job_id in before + during:
            farm.check_one_result(job_id, wait_for(api, job_id, FINAL, timeout=JOB_WAIT_S))


def test_server_restart_while_workers_run_loses_nothing(farm):
    with farm.api() as api:
        ids = [farm.submit(api, seed=300 + i) for i in range(4)]
        farm.wait_in_progress(api, ids[0])
    farm.server.kill()                       # a crash: nothing cleaned up
    time.sleep(3)                            # the workers carry on; their events wait in the stream
    farm.server.start()
    with farm.api() as api:
        for job_id in ids:
            farm.check_one_result(job_id, wait_for(api, job_id, FINAL, timeout=JOB_WAIT_S))
            assert farm.device(job_id) in farm.workers


def test_after_a_restart_the_sweep_leaves_outcomes_to_the_stream_until_it_is_read(tmp_path):
    """The race behind the restart test, made certain: the sweep runs before the events loop has read
    the stream (as at every start), and must not record a job under the placeholder worker 'farm'
    while the stream still holds its started event; an outcome whose events were trimmed is still
    applied by the sweep once the stream has been read."""
    from backend_remote import job_store
    from backend_remote.farm.results import Events, Outcomes
    from backend_remote.farm.scheduler import FarmScheduler

    redis_server = RedisServer(os.path.join(str(tmp_path), "redis")).start()
    store = job_store.JobStore(os.path.join(str(tmp_path), "jobs.sqlite3"))
    scheduler = FarmScheduler(store, None, redis_server.url, str(tmp_path))     # storage: no result is dropped
    events = threading.Thread(target=scheduler._events_loop, daemon=True)
    try:
        streamed, trimmed = (scheduler.submit(sphere_request(**TINY)) for _ in range(2))
        assert scheduler._dispatch_queued() and set(scheduler.ledger.in_flight()) == {streamed, trimmed}
        client = redis_server.client()
        manifest = {"files": {}}                 # the scheduler only stores it
        Events(client, "w1@farm").started(streamed, 1)     # what w1@farm wrote while the server was down
        for job_id in (streamed, trimmed):
            Outcomes(client).record(job_id, {"status": "COMPLETED", "manifest": manifest})
        Events(client, "w1@farm").outcome(streamed, {"status": "COMPLETED", "manifest": manifest})

        scheduler._sweep()                       # before the events loop's first read
        assert [store.get(job_id).status for job_id in (streamed, trimmed)] == ["IN_QUEUE", "IN_QUEUE"]
        events.start()
        job = scheduler.wait(streamed, timeout=20)
        assert (job.status, job.device, job.output) == ("COMPLETED", "w1@farm", manifest)
        assert scheduler._caught_up.wait(20) and store.get(trimmed).status == "IN_QUEUE"
        scheduler._sweep()
        job = store.get(trimmed)
        assert (job.status, job.device, job.output) == ("COMPLETED", "farm", manifest)   # no event names a worker
        assert scheduler.ledger.in_flight() == []
    finally:
        scheduler._stopping.set()
        if events.is_alive():
            events.join(10)
        scheduler.stop()
        store.close()
        redis_server.stop()


def test_pool_process_killed_mid_job_is_delivered_again_at_once(farm):
    with farm.api() as api:
        job_id = farm.submit(api, seed=400)         # held 8 s at each delivery (tests/farm_hooks): killed mid-job
        worker = farm.wait_in_progress(api, job_id)
        killed_at = time.monotonic()
        for pid in farm.workers[worker].pool_pids():
            os.kill(pid, 9)
        farm.check_one_result(job_id, wait_for(api, job_id, FINAL, timeout=JOB_WAIT_S))
        started = [e for e in job_events(farm.redis_client, job_id) if e[0] == "started"]
        assert [e[2]["delivery"] for e in started] == [1, 2]
        # task_reject_on_worker_lost put it back at once, not after the 110 s visibility timeout
        assert started[1][2]["at"] - (time.time() - (time.monotonic() - killed_at)) < 60
        assert farm.workers[worker].proc.poll() is None          # the Celery parent lives on


def test_worker_killed_mid_job_completes_on_the_other_with_one_result(farm):
    with farm.api() as api:
        job_id = farm.submit(api, seed=500)         # held 8 s at each delivery (tests/farm_hooks)
        worker = farm.wait_in_progress(api, job_id)
        farm.workers[worker].kill()          # kill -9 of the whole worker: a lost machine
        body = wait_for(api, job_id, FINAL, timeout=float(FARM_ENV["GEN3D_FARM_VISIBILITY_S"]) + JOB_WAIT_S)
        farm.check_one_result(job_id, body)
        events = job_events(farm.redis_client, job_id)
        starts = [e[1] for e in events if e[0] == "started"]
        (other,) = set(farm.workers) - {worker}
        assert starts == [worker, other]
        assert [e[1] for e in events if e[0] == "outcome"] == [other]
        farm.restart_worker(worker)


def test_farm_mode_refuses_disk_storage_and_bad_queue_urls(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("k\n")
    keys.chmod(0o600)
    base = [sys.executable, "-m", "backend_remote", "serve", "--api-key-file", str(keys), "--data-dir",
            str(tmp_path / "data")]
    env = dict(os.environ, PYTHONPATH=ROOT)
    disk = subprocess.run(base + ["--queue", "redis://127.0.0.1:1/0"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert disk.returncode == 2 and "--storage s3://" in disk.stderr and "Traceback" not in disk.stderr
    worker = subprocess.run([sys.executable, "-m", "backend_remote", "worker", "--queue", "amqp://x/",
                             "--storage", STORAGE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert worker.returncode == 2 and "not a Redis URL" in worker.stderr and "Traceback" not in worker.stderr


DEAF_JOB_TIMEOUT_S = 45          # also the limit of the ordinary job after it, on a busy machine


def test_a_job_deaf_to_cancel_is_killed_after_the_grace_and_the_worker_serves_on(tmp_path, moto_s3):
    """A job that never looks at its cancel flag: at --job-timeout the worker asks it to stop, at the
    grace after that Celery kills the pool process and starts a fresh one; the server marks the job
    TIMED_OUT, and the next job on the same worker completes."""
    sys.path.insert(0, HOOKS_DIR)
    from sitecustomize import STUCK_SEED

    grace = {"GEN3D_FARM_KILL_GRACE_S": "3"}
    redis_server = RedisServer(os.path.join(str(tmp_path), "redis")).start()
    client = redis_server.client()
    worker = WorkerProcess(redis_server.url, STORAGE, dict(moto_s3.env, PYTHONPATH=HOOKED_PYTHONPATH, **grace),
                           tmp_path, "deaf@farm", job_timeout=DEAF_JOB_TIMEOUT_S)
    server = None
    try:
        worker.start().wait_ready(client)
        server = ServerProcess(os.path.join(str(tmp_path), "server"), storage=STORAGE,
                               env=dict(moto_s3.env, **FARM_ENV, **grace),
                               extra_args=["--queue", redis_server.url, "--job-timeout", str(DEAF_JOB_TIMEOUT_S)]).start()
        with server.client() as api:
            body = api.post("/run", json={"input": sphere_request(**dict(TINY, seed=STUCK_SEED))}).json()
            job_id = body["id"]
            wait_for(api, job_id, ("IN_PROGRESS",), timeout=JOB_WAIT_S)
            pools_before = set(worker.pool_pids())
            started = time.monotonic()
            body = wait_for(api, job_id, FINAL, timeout=DEAF_JOB_TIMEOUT_S + 120)
            assert body["status"] == "TIMED_OUT" and body["error"]["code"] == "TIMEOUT", body
            assert time.monotonic() - started < DEAF_JOB_TIMEOUT_S + 60
            deadline = time.monotonic() + 60          # Celery's hard limit has killed the deaf pool process
            while time.monotonic() < deadline and (set(worker.pool_pids()) & pools_before
                                                   or not worker.pool_pids()):
                time.sleep(0.2)
            assert pools_before and not set(worker.pool_pids()) & pools_before, worker.log()[-3000:]
            assert worker.proc.poll() is None                 # the Celery parent lives on
            assert "TimeLimitExceeded" in worker.log() or "Hard time limit" in worker.log(), worker.log()[-3000:]

            worker.wait_ready(client)
            next_id = api.post("/run", json={"input": sphere_request(**dict(TINY, seed=7))}).json()["id"]
            body = wait_for(api, next_id, FINAL, timeout=JOB_WAIT_S)
            assert body["status"] == "COMPLETED", body
            assert check_downloads(body["output"])["mesh.glb"][:4] == b"glTF"
    finally:
        if server is not None:
            server.stop()
        worker.stop()
        redis_server.stop()
