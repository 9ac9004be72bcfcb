"""Farm mode on loopback: throughput with 1 and 2 workers on the same jobs, and the queue's added
latency per job.

    python bench/farm.py [--jobs 8] [--latency-jobs 5] [--face-count N] [--texture-size N]
                         [--octree-resolution N] [--json FILE]

Starts a redis-server (Debian's package) on a free port, S3 on an in-process moto server, the server
with `serve --queue` and CPU workers (`python -m backend_remote worker --device cpu`), then:

  1. one worker: a warm-up job, then `--jobs` jobs submitted at once -> jobs per minute;
  2. a second worker joins: the same jobs again -> jobs per minute, and the ratio to 1 worker;
     1 and 2 run alternately `--rounds` times (medians), so drifting load on a shared machine hits both.
     Both workers share this machine's cores, so the ratio says how well the farm spreads work,
     bounded by the CPU (on 2 cores with a multi-threaded pipeline it cannot reach 2);
  3. `--latency-jobs` jobs one at a time on the idle first worker, /status polled every 10 ms: added latency
     = end to end seen by the client - the worker's time on the job (from its "started" to its
     "outcome" event, both stamped by Redis in the stream ids). It covers the HTTP submit, SQLite,
     the Celery hand-off, the events back and the /status that sees COMPLETED (target <= 0.2 s).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

from farm_support import FARM_ENV, RedisServer, WorkerProcess  # noqa: E402
from test_remote_support import BUCKET, MotoS3, ServerProcess, sphere_request  # noqa: E402

TARGET_LATENCY_S = 0.2
STORAGE = "s3://%s/bench" % BUCKET
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")


def run_batch(api, requests):
    """Submit all at once, wait for all; returns seconds from the first submit to the last COMPLETED."""
    started = time.perf_counter()
    ids = [api.post("/run", json={"input": request}).json()["id"] for request in requests]
    pending = set(ids)
    while pending:
        for job_id in list(pending):
            body = api.get("/status/%s" % job_id).json()
            if body["status"] in FINAL:
                if body["status"] != "COMPLETED":
                    raise SystemExit("job %s ended %s: %s" % (job_id, body["status"], body.get("error")))
                pending.discard(job_id)
        time.sleep(0.05)
    return time.perf_counter() - started, ids


def worker_span_s(client, job_id):
    """Seconds between the job's last "started" and its "outcome" event (Redis's own clock)."""
    marks = {}
    for entry_id, fields in client.xrange("gen3d:events"):
        if fields.get("job_id") == job_id and fields["kind"] in ("started", "outcome"):
            marks[fields["kind"]] = int(entry_id.split("-")[0]) / 1000.0
    return marks["outcome"] - marks["started"]


def one_job_latency(api, client, request):
    started = time.perf_counter()
    job_id = api.post("/run", json={"input": request}).json()["id"]
    while True:
        body = api.get("/status/%s" % job_id).json()
        if body["status"] in FINAL:
            break
        time.sleep(0.01)
    wall = time.perf_counter() - started
    if body["status"] != "COMPLETED":
        raise SystemExit("job %s ended %s: %s" % (job_id, body["status"], body.get("error")))
    span = worker_span_s(client, job_id)
    return {"end_to_end_s": wall, "worker_s": span, "added_s": wall - span, "delay_ms": body["delayTime"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--latency-jobs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="alternations of 1 and 2 workers (medians reported)")
    parser.add_argument("--face-count", type=int, default=2000)
    parser.add_argument("--texture-size", type=int, default=256)
    parser.add_argument("--octree-resolution", type=int, default=64)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)
    params = {"face_count": args.face_count, "texture_size": args.texture_size,
              "octree_resolution": args.octree_resolution}
    requests = [sphere_request(seed=seed, **params) for seed in range(args.jobs)]

    with tempfile.TemporaryDirectory(prefix="gen3d-farm-bench-") as work:
        redis = RedisServer(os.path.join(work, "redis")).start()
        client = redis.client()
        moto = MotoS3()
        first = second = server = None
        one_runs, two_runs = [], []
        try:
            first = WorkerProcess(redis.url, STORAGE, moto.env, work, "b1@bench").start().wait_ready(client)
            server = ServerProcess(os.path.join(work, "server"), storage=STORAGE, env=dict(moto.env, **FARM_ENV),
                                   extra_args=["--queue", redis.url, "--log-level", "warning"]).start()
            with server.client() as api:
                run_batch(api, [sphere_request(seed=999, **params)])             # warm-up: first-job costs
                # 1 and 2 workers alternate, so a change in the machine's load hits both alike.
                for _round in range(args.rounds):
                    one_runs.append(run_batch(api, requests)[0])
                    client.delete("gen3d:worker:b2@bench")
                    second = WorkerProcess(redis.url, STORAGE, moto.env, work, "b2@bench").start().wait_ready(client)
                    run_batch(api, [sphere_request(seed=998, **params)] * 2)    # its first-job costs
                    two_runs.append(run_batch(api, requests)[0])
                    second.stop()
                    second = None
                latency = [one_job_latency(api, client, sphere_request(seed=500 + i, **params))
                           for i in range(args.latency_jobs)]
        finally:
            if server:
                server.stop()
            for worker in (first, second):
                if worker:
                    worker.stop()
            redis.stop()
            moto.stop()
    one_s, two_s = statistics.median(one_runs), statistics.median(two_runs)

    one_rate, two_rate = args.jobs / one_s * 60, args.jobs / two_s * 60
    added = [item["added_s"] for item in latency]
    result = {
        "params": params, "jobs": args.jobs, "cpu_cores": os.cpu_count(),
        "one_worker": {"seconds": round(one_s, 2), "jobs_per_min": round(one_rate, 2),
                       "runs_s": [round(x, 2) for x in one_runs]},
        "two_workers": {"seconds": round(two_s, 2), "jobs_per_min": round(two_rate, 2),
                        "runs_s": [round(x, 2) for x in two_runs]},
        "load_average": os.getloadavg(),
        "ratio_two_to_one": round(two_rate / one_rate, 3),
        "latency": [{k: round(v, 4) for k, v in item.items()} for item in latency],
        "added_latency_median_s": round(statistics.median(added), 4),
        "added_latency_max_s": round(max(added), 4),
        "target_s": TARGET_LATENCY_S,
    }
    print("%d jobs (%d faces, %d px textures, octree %d) on %d CPU cores" % (
        args.jobs, args.face_count, args.texture_size, args.octree_resolution, os.cpu_count()))
    print("  1 worker : %6.2f s  %6.2f jobs/min  (runs %s s)" % (one_s, one_rate, ", ".join("%.1f" % x for x in one_runs)))
    print("  2 workers: %6.2f s  %6.2f jobs/min  (runs %s s; ratio %.2f)" % (
        two_s, two_rate, ", ".join("%.1f" % x for x in two_runs), two_rate / one_rate))
    print("  load average at the end: %.1f %.1f %.1f (other work on the machine skews the ratio)" % os.getloadavg())
    print("queue's added latency per job (%d jobs, one idle worker): median %.3f s, max %.3f s (target <= %.1f s: "
          "%s)" % (len(added), statistics.median(added), max(added), TARGET_LATENCY_S,
                   "met" if statistics.median(added) <= TARGET_LATENCY_S else "MISSED"))
    for item in latency:
        print("  end to end %.3f s = worker %.3f s + added %.3f s (delayTime %d ms)" % (
            item["end_to_end_s"], item["worker_s"], item["added_s"], item["delay_ms"]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
