"""A soak of the self-hosted server: many small jobs, and whether anything leaks.

    python bench/soak.py [--jobs 200] [--in-flight 6] [--warmup 20] [--no-texture] [--max-minutes M]
                         [--image IMG] [--json FILE]

Starts `python -m backend_remote serve` on 127.0.0.1 (disk storage, CPU, the builtin engine at its
smallest settings), keeps `--in-flight` jobs queued or running until `--jobs` have ended, and
checks each one: COMPLETED with every file downloadable and matching its sha256 (every 10th job
is downloaded in full, the others by HEAD), FAILED, or lost (the server stopped knowing it, or it
never ended). Every 10th job is a bad request mixed in (refused at submit; must stay refused).
Reports completed / failed / lost, the tracebacks in the server's log, and the memory of the
server and its device process (RSS, summed) after the warm-up jobs and at the end: growth after
warm-up should be under 5 %. `--max-minutes` stops submitting after that long (the jobs in flight
still finish) and reports how many jobs it ran, for machines too slow or too busy for the full count.
"""

import argparse
import base64
import hashlib
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import httpx  # noqa: E402
import psutil  # noqa: E402

from bench.server_process import launch  # noqa: E402

API_KEY = "soak-key"
SMALL = {"face_count": 1000, "texture_size": 256, "octree_resolution": 64}
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
TARGET_GROWTH = 0.05
JOB_DEADLINE_S = 600


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(work):
    key_file = os.path.join(work, "keys")
    with open(key_file, "w") as handle:
        handle.write(API_KEY + "\n")
    os.chmod(key_file, 0o600)
    port = free_port()
    cmd = [sys.executable, "-m", "backend_remote", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--api-key-file", key_file, "--data-dir", os.path.join(work, "data"), "--device", "cpu",
           "--log-level", "warning"]
    log_path = os.path.join(work, "server.log")
    url = "http://127.0.0.1:%d" % port
    proc = launch(cmd, ROOT, dict(os.environ, PYTHONPATH=ROOT), log_path, url, auth(), timeout_s=180, poll_s=0.2)
    return proc, url, log_path


def auth():
    return {"Authorization": "Bearer %s" % API_KEY}


def rss_mb(pid):
    """Resident memory of the server and its children (the device process), in MB."""
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2 ** 20


def check_files(manifest, full):
    for name, info in manifest["files"].items():
        if full:
            response = httpx.get(info["url"], timeout=60)
            if response.status_code != 200 or hashlib.sha256(response.content).hexdigest() != info["sha256"]:
                return "%s: HTTP %d or sha256 mismatch" % (name, response.status_code)
        else:
            response = httpx.head(info["url"], timeout=60)
            if response.status_code != 200 or int(response.headers.get("content-length", -1)) != info["bytes"]:
                return "%s: HEAD %d" % (name, response.status_code)
    return None


def soak(url, pid, image_b64, jobs, in_flight, texture=True, max_s=None):
    api = httpx.Client(base_url=url, headers=auth(), timeout=60)
    good = dict(SMALL, image=image_b64, texture=texture)
    bad = {"image": base64.b64encode(b"not an image").decode("ascii")}
    outcome = {"completed": 0, "failed": 0, "lost": 0, "bad_refused": 0, "bad_accepted": 0, "file_errors": []}
    pending = {}                         # job id -> (index, submitted at)
    submitted = ended = 0
    samples = []                         # (jobs ended, RSS MB)
    next_sample = 10
    started = time.monotonic()
    while ended < jobs:
        if max_s is not None and time.monotonic() - started > max_s and submitted < jobs:
            print("time budget spent after %d submitted jobs; letting those finish" % submitted, flush=True)
            jobs = submitted
        while submitted < jobs and len(pending) < in_flight:
            index = submitted
            submitted += 1
            if index % 10 == 9:          # a bad request: refused at submit, never queued
                body = api.post("/run", json={"input": bad}).json()
                refused = body.get("status") == "FAILED" and body.get("error", {}).get("code") == "INVALID_INPUT"
                outcome["bad_refused" if refused else "bad_accepted"] += 1
                ended += 1
                continue
            response = api.post("/run", json={"input": dict(good, seed=index)})
            if response.status_code == 429:          # over the key's quota: wait as told
                submitted -= 1
                time.sleep(float(response.headers.get("retry-after", "1")))
                break
            pending[response.json()["id"]] = (index, time.monotonic())
        for job_id, (index, at) in list(pending.items()):
            response = api.get("/status/%s" % job_id)
            if response.status_code == 404 or time.monotonic() - at > JOB_DEADLINE_S:
                outcome["lost"] += 1
            else:
                body = response.json()
                if body["status"] not in FINAL:
                    continue
                if body["status"] == "COMPLETED":
                    outcome["completed"] += 1
                    problem = check_files(body["output"], full=index % 10 == 0)
                    if problem:
                        outcome["file_errors"].append(problem)
                else:
                    outcome["failed"] += 1
                    print("job %d %s: %s" % (index, body["status"], body.get("error")), flush=True)
            del pending[job_id]
            ended += 1
            if ended >= next_sample:
                next_sample += 10
                samples.append((ended, rss_mb(pid)))
                print("%3d/%d ended, %.0f s, RSS %.0f MB" % (ended, jobs, time.monotonic() - started, samples[-1][1]),
                      flush=True)
        time.sleep(0.1)
    samples.append((ended, rss_mb(pid)))
    outcome["jobs_run"] = jobs
    outcome["seconds"] = round(time.monotonic() - started, 1)
    return outcome, samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=20, help="jobs ended before the RSS baseline")
    parser.add_argument("--no-texture", action="store_true", help="untextured meshes (faster jobs)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop submitting after this long")
    parser.add_argument("--image", default=os.path.join(ROOT, "tests", "data", "sphere", "input.png"))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with open(args.image, "rb") as handle:
        image_b64 = base64.b64encode(handle.read()).decode("ascii")
    with tempfile.TemporaryDirectory(prefix="gen3d-soak-") as work:
        proc, url, log_path = start_server(work)
        try:
            outcome, samples = soak(url, proc.pid, image_b64, args.jobs, args.in_flight,
                                    texture=not args.no_texture,
                                    max_s=args.max_minutes * 60 if args.max_minutes else None)
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(60)
        with open(log_path, errors="replace") as log:
            text = log.read()
    baseline = next((rss for ended, rss in samples if ended >= args.warmup), samples[0][1])
    final = samples[-1][1]
    peak = max(rss for ended, rss in samples if ended >= args.warmup)
    report = dict(outcome, jobs_asked=args.jobs, texture=not args.no_texture, server_alive_at_end=alive, tracebacks=text.count("Traceback (most recent"),
                  rss_after_warmup_mb=round(baseline, 1), rss_end_mb=round(final, 1), rss_peak_mb=round(peak, 1),
                  rss_growth=round((final - baseline) / baseline, 4), rss_samples=[(n, round(r, 1)) for n, r in samples])
    report["ok"] = (report["lost"] == 0 and report["tracebacks"] == 0 and not report["file_errors"]
                    and report["bad_accepted"] == 0 and alive and report["rss_growth"] < TARGET_GROWTH)
    print(json.dumps({k: v for k, v in report.items() if k != "rss_samples"}, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
