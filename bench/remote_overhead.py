"""What the remote path costs on top of the pipeline, on loopback.

    python bench/remote_overhead.py [--image IMG] [--jobs 8] [--storage disk|s3] [--face-count N]
                                    [--texture-size N] [--octree-resolution N] [--json FILE]

Starts `python -m backend_remote serve` on 127.0.0.1 (disk storage, or S3 on an in-process moto
server with --storage s3), runs one warm-up job, then:

  1. one job end to end through the add-on's RemoteClient (submit, poll, download, sha256 check)
     and compares its wall time with the pipeline's own time from the manifest: the difference is
     the remote overhead (target <= 0.5 s);
  2. `--jobs` jobs submitted at once, polled until all are done: jobs per minute, against what the
     pipeline alone would do back to back (one job at a time per device, so the ratio is ~1).
"""

import argparse
import base64
import json
import os
import statistics
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import httpx  # noqa: E402

from bench.server_process import launch  # noqa: E402
from blender_addon.remote_client import RemoteClient  # noqa: E402
from blender_addon.settings import REMOTE, BackendSettings  # noqa: E402

API_KEY = "bench-key"
BUCKET = "gen3d-bench"
TARGET_OVERHEAD_S = 0.5


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_moto():
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)      # no access log lines in the report

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = "http://%s:%d" % server.get_host_and_port()
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench").create_bucket(Bucket=BUCKET)
    env = {"GEN3D_S3_ENDPOINT_URL": endpoint, "GEN3D_S3_ACCESS_KEY_ID": "bench",
           "GEN3D_S3_SECRET_ACCESS_KEY": "bench", "GEN3D_S3_REGION": "us-east-1"}
    return server, env


def start_server(work, storage):
    key_file = os.path.join(work, "keys")
    with open(key_file, "w") as handle:
        handle.write(API_KEY + "\n")
    os.chmod(key_file, 0o600)
    port = free_port()
    cmd = [sys.executable, "-m", "backend_remote", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--api-key-file", key_file, "--data-dir", os.path.join(work, "data"), "--log-level", "warning"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    moto = None
    if storage == "s3":
        moto, s3_env = start_moto()
        env.update(s3_env)
        cmd += ["--storage", "s3://%s/bench" % BUCKET]
    url = "http://127.0.0.1:%d" % port
    proc = launch(cmd, ROOT, env, os.path.join(work, "server.log"), url, auth(), timeout_s=120, poll_s=0.1)
    return proc, url, moto


def auth():
    return {"Authorization": "Bearer %s" % API_KEY}


def client_job(url, request, out_dir, job_id):
    """One job through the add-on's client; returns (wall seconds, manifest)."""
    client = RemoteClient(BackendSettings(backend=REMOTE, remote_url=url, api_key=API_KEY))
    job_dir = os.path.join(out_dir, job_id)
    started = time.perf_counter()
    client.run(job_id, request, job_dir, lambda event: None, threading.Event())
    wall = time.perf_counter() - started
    with open(os.path.join(job_dir, "meta.json")) as handle:
        return wall, json.load(handle)


def throughput(url, request, count):
    """Submit `count` jobs at once and wait for all; returns (seconds, manifests)."""
    with open(request["image_path"], "rb") as handle:
        wire = {k: v for k, v in request.items() if k != "image_path"}
        wire["image"] = base64.b64encode(handle.read()).decode("ascii")
    api = httpx.Client(base_url=url, headers=auth(), timeout=60)
    started = time.perf_counter()
    ids = [api.post("/run", json={"input": wire}).json()["id"] for _ in range(count)]
    manifests = {}
    while len(manifests) < count:
        for job_id in ids:
            if job_id in manifests:
                continue
            body = api.get("/status/%s" % job_id).json()
            if body["status"] == "COMPLETED":
                manifests[job_id] = body["output"]
            elif body["status"] in ("FAILED", "CANCELLED", "TIMED_OUT"):
                raise SystemExit("job %s ended %s: %s" % (job_id, body["status"], body.get("error")))
        time.sleep(0.1)
    return time.perf_counter() - started, list(manifests.values())


def pipeline_seconds(manifest):
    timings = manifest["timings"]
    return timings["total"] - timings["upload"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=os.path.join(ROOT, "tests", "data", "sphere", "input.png"))
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--storage", choices=("disk", "s3"), default="disk")
    parser.add_argument("--face-count", type=int, default=5000)
    parser.add_argument("--texture-size", type=int, default=512)
    parser.add_argument("--octree-resolution", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end jobs to time (the median is reported)")
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args(argv)

    request = {"image_path": os.path.abspath(args.image), "face_count": args.face_count,
               "texture_size": args.texture_size, "octree_resolution": args.octree_resolution}
    with tempfile.TemporaryDirectory(prefix="gen3d-bench-") as work:
        proc, url, moto = start_server(work, args.storage)
        try:
            client_job(url, request, work, "warmup0000000000")          # first-job costs (kernels, caches)
            runs = [client_job(url, request, work, "e2e%013d" % i) for i in range(args.repeats)]
            batch_s, manifests = throughput(url, request, args.jobs)
        finally:
            proc.terminate()
            proc.wait(30)
            if moto:
                moto.stop()

    overheads = [wall - pipeline_seconds(manifest) for wall, manifest in runs]
    wall = statistics.median(w for w, _m in runs)
    overhead = statistics.median(overheads)
    upload = statistics.median(m["timings"]["upload"] for _w, m in runs)
    pipeline_mean = statistics.mean(pipeline_seconds(m) for m in manifests)
    jobs_per_min = args.jobs / batch_s * 60
    serial_per_min = 60 / pipeline_mean
    result = {
        "storage": args.storage, "params": request,
        "end_to_end_s": round(wall, 3), "pipeline_s": round(wall - overhead, 3), "overhead_s": round(overhead, 3),
        "overhead_runs_s": [round(o, 3) for o in overheads], "upload_s": round(upload, 3),
        "overhead_ratio_of_job": round(overhead / wall, 4),
        "overhead_vs_target": round(overhead / TARGET_OVERHEAD_S, 3),
        "queued_jobs": args.jobs, "batch_s": round(batch_s, 2), "jobs_per_min": round(jobs_per_min, 2),
        "pipeline_only_jobs_per_min": round(serial_per_min, 2),
        "throughput_ratio": round(jobs_per_min / serial_per_min, 3),
    }
    print("storage %s, %d faces, %d px textures, octree %d" % (args.storage, args.face_count, args.texture_size,
                                                               args.octree_resolution))
    print("one job end to end (median of %d): %.3f s = pipeline %.3f s + remote overhead %.3f s "
          "(%.1f%% of the job; target <= %.1f s: %s)" % (args.repeats, wall, wall - overhead, overhead,
                                                         100 * overhead / wall, TARGET_OVERHEAD_S,
                                                         "met" if overhead <= TARGET_OVERHEAD_S else "MISSED"))
    print("  of which storing the result (upload stage): %.3f s; overhead per run: %s" % (
        upload, ", ".join("%.3f" % o for o in overheads)))
    print("%d jobs queued at once: %.2f s, %.2f jobs/min; pipeline alone back to back: %.2f jobs/min "
          "(ratio %.3f)" % (args.jobs, batch_s, jobs_per_min, serial_per_min, jobs_per_min / serial_per_min))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
