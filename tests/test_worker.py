"""The stdio worker (`python -m backend_local serve`) as the add-on drives it: real subprocess, real jobs."""

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest

from shared.manifest import read_manifest

from conftest import ROOT, SMALL, data


class WorkerProcess:
    def __init__(self, tmp_path):
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen([sys.executable, "-m", "backend_local", "serve", "--device", "cpu",
                                      "--out-root", str(tmp_path / "root")], cwd=ROOT, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.lines = queue.Queue()
        self.raw = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw.append(line)
            self.lines.put(json.loads(line))        # every stdout line must be protocol JSON
        self.lines.put(None)

    def send(self, **message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()

    def next(self, timeout=120):
        return self.lines.get(timeout=timeout)

    def until(self, predicate, timeout=180):
        deadline = time.time() + timeout
        seen = []
        while time.time() < deadline:
            event = self.next(timeout=max(0.1, deadline - time.time()))
            assert event is not None, "worker exited; stderr: %s" % self.proc.stderr.read()[-2000:]
            seen.append(event)
            if predicate(event):
                return event, seen
        raise AssertionError("timed out; saw %s" % seen[-5:])


@pytest.fixture
def worker(tmp_path):
    process = WorkerProcess(tmp_path)
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
    process.proc.wait(timeout=30)


def test_ready_ping_submit_complete(worker, tmp_path):
    ready = worker.next(timeout=120)
    assert ready["event"] == "ready" and ready["api_version"] == "1"
    assert any(engine["name"] == "builtin" and engine["available"] for engine in ready["engines"])
    worker.send(op="ping")
    assert worker.next()["event"] == "pong"

    out = str(tmp_path / "job1")
    worker.send(op="submit", job_id="job1", out_dir=out, request=dict(SMALL, image_path=data("torus", "input.png")))
    accepted = worker.next()
    assert accepted == {"event": "accepted", "job_id": "job1", "position": 0, "out_dir": out}
    done, seen = worker.until(lambda e: e["event"] in ("completed", "failed"))
    assert done["event"] == "completed" and done["out_dir"] == out
    progress = [e["progress"] for e in seen if e["event"] == "progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert read_manifest(out)["job_id"] == "job1"

    # second job reuses the loaded pipeline and goes to the default root when no out_dir is given
    worker.send(op="submit", job_id="job2", request=dict(SMALL, image_path=data("sphere", "input.png"),
                                                          texture=False))
    done, _ = worker.until(lambda e: e["event"] in ("completed", "failed"))
    assert done["event"] == "completed" and done["out_dir"] == str(tmp_path / "root" / "job2")
    assert done["manifest"]["textures"] is None


def test_bad_requests_fail_with_codes(worker, tmp_path):
    assert worker.next()["event"] == "ready"
    worker.send(op="submit", job_id="bad1", request={"image_path": "x.png", "seed": -1})
    failed = worker.next()
    assert failed["event"] == "failed" and failed["error"]["code"] == "INVALID_INPUT"
    assert "'seed'" in failed["error"]["message"]
    worker.send(op="submit", job_id="bad2", request={"image_path": str(tmp_path / "none.png")})
    failed, _ = worker.until(lambda e: e["event"] == "failed")
    assert failed["job_id"] == "bad2" and failed["error"]["stage"] == "preprocess"
    worker.proc.stdin.write("this is not json\n")
    worker.proc.stdin.flush()
    assert worker.next()["error"]["code"] == "INVALID_INPUT"
    worker.send(op="dance")
    assert "Unknown op" in worker.next()["error"]["message"]


def test_cancel_running_and_queued_jobs_quickly(worker, tmp_path):
    assert worker.next()["event"] == "ready"
    request = {"image_path": data("mug", "input.png"), "face_count": 40000, "texture_size": 1024}
    worker.send(op="submit", job_id="run", out_dir=str(tmp_path / "run"), request=request)
    worker.send(op="submit", job_id="wait", out_dir=str(tmp_path / "wait"), request=request)
    worker.until(lambda e: e["event"] == "progress" and e["job_id"] == "run" and e["stage"] == "shape")
    worker.send(op="cancel", job_id="wait")
    cancelled, _ = worker.until(lambda e: e["event"] == "cancelled")
    assert cancelled["job_id"] == "wait"
    sent = time.time()
    worker.send(op="cancel", job_id="run")
    cancelled, _ = worker.until(lambda e: e["event"] in ("cancelled", "completed"))
    latency = time.time() - sent
    assert cancelled == {"event": "cancelled", "job_id": "run", "stage": cancelled["stage"]}
    assert latency < 2.0
    assert not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "wait")
    assert [p for p in os.listdir(tmp_path) if p.startswith(".")] == []


def test_exits_when_stdin_closes_and_keeps_stdout_clean(worker):
    assert worker.next()["event"] == "ready"
    worker.send(op="ping")
    worker.proc.stdin.close()
    assert worker.proc.wait(timeout=30) == 0
    assert all(line.startswith("{") for line in worker.raw)
