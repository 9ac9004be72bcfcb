"""The RunPod worker, called the way RunPod's SDK calls it: `rp_job.run_job(handler, {"id", "input"})`,
with `runpod.serverless.progress_update` posting to a stand-in for RunPod's job API on 127.0.0.1, and
outputs uploaded to a moto S3 server."""

import asyncio
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest
from runpod.serverless.modules import rp_http, rp_job

from backend_remote import handler
from shared.errors import Gen3DError
from shared.progress import STAGES

from test_remote_support import BUCKET, LONG, ROOT, MotoS3, check_downloads, sphere_request

pytest_plugins = ["test_remote_support"]


class RunPodJobApi:
    """Receives what the SDK posts to RunPod's job-done URL (progress updates are posted there too)."""

    def __init__(self):
        posts = self.posts = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                posts.append((urllib.parse.urlsplit(self.path), json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.url = "http://127.0.0.1:%d/v2/job-done/$ID?gpu=test" % self.httpd.server_address[1]

    def progress(self, job_id):
        return [data["output"] for url, data in self.posts
                if url.path.endswith("/" + job_id) and data.get("status") == "IN_PROGRESS"]

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def runpod_api(monkeypatch):
    api = RunPodJobApi()
    monkeypatch.setattr(rp_http, "JOB_DONE_URL", api.url)
    yield api
    api.stop()


@pytest.fixture()
def worker(monkeypatch, moto_s3, pipeline):
    """The handler module configured like a deployed worker: storage from the environment, one pipeline."""
    for key, value in moto_s3.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("GEN3D_URL_EXPIRES_S", "1200")
    monkeypatch.setattr(handler, "_storage", None)
    monkeypatch.setattr(handler, "_pipeline", pipeline)
    return handler


def run_as_runpod(job):
    return asyncio.run(rp_job.run_job(handler.handler, job))


def wait_until(condition, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_job_uploads_and_returns_presigned_manifest(worker, runpod_api, moto_s3):
    result = run_as_runpod({"id": "rp-job-1", "input": sphere_request()})
    assert "error" not in result, result
    manifest = result["output"]
    assert manifest["job_id"] == "rp-job-1" and manifest["status"] == "completed"
    assert manifest["params"]["octree_resolution"] == 64 and manifest["timings"]["upload"] > 0

    keys = moto_s3.keys("gen3d/rp-job-1/")
    assert keys == sorted("gen3d/rp-job-1/%s" % n for n in list(manifest["files"]) + ["meta.json"])
    assert "X-Amz-Expires=1200" in manifest["files"]["mesh.glb"]["url"]
    files = check_downloads(manifest)
    stored_meta = json.loads(files["meta.json"])
    assert stored_meta["files"] == {name: {"bytes": info["bytes"], "sha256": info["sha256"]}
                                    for name, info in manifest["files"].items()}
    assert files["mesh.glb"][:4] == b"glTF"

    # progress_update posts each event from its own thread: they may arrive in any order.
    assert wait_until(lambda: any(e["stage"] == "upload" for e in runpod_api.progress("rp-job-1")))
    events = sorted(runpod_api.progress("rp-job-1"), key=lambda e: (e["progress"], STAGES.index(e["stage"])))
    assert all(e["job_id"] == "rp-job-1" and e["stage"] in STAGES for e in events)
    assert [STAGES.index(e["stage"]) for e in events] == sorted(STAGES.index(e["stage"]) for e in events)
    assert {"preprocess", "shape", "texture", "export", "upload"} <= {e["stage"] for e in events}
    assert max(e["progress"] for e in events) < 1.0          # 100% is reported by COMPLETED itself


def _error(result):
    """The contract error in a RunPod result: `error` is JSON text (the SDK types it as a string)."""
    assert isinstance(result["error"], str), result
    return json.loads(result["error"])


def test_invalid_input_is_a_contract_error(worker, runpod_api):
    result = run_as_runpod({"id": "rp-job-2", "input": {"image_path": "/etc/passwd"}})
    assert "output" not in result and "stopPod" not in result          # bad input: keep the worker
    error = _error(result)
    assert error["code"] == "INVALID_INPUT" and "image_path" in error["message"] and error["retryable"] is False
    refused = run_as_runpod({"id": "rp-job-3", "input": {"image_url": "http://169.254.169.254/latest/meta-data/"}})
    assert _error(refused)["code"] == "INVALID_INPUT" and "private, local or reserved" in _error(refused)["message"]
    assert handler.parse_failure(refused).code == "INVALID_INPUT"
    assert handler.parse_failure({"error": {"code": "STORAGE", "message": "old"}}).code == "STORAGE"   # older workers
    assert handler.parse_failure({"error": "plain text"}).code == "INTERNAL"


def test_out_of_memory_and_internal_refresh_the_worker(worker, runpod_api, monkeypatch):
    def out_of_memory(*_args, **_kwargs):
        raise Gen3DError("OUT_OF_MEMORY", "The GPU ran out of memory during shape.", stage="shape")

    monkeypatch.setattr(handler, "execute_job", out_of_memory)
    result = run_as_runpod({"id": "rp-job-oom", "input": sphere_request()})
    assert _error(result)["code"] == "OUT_OF_MEMORY" and result["stopPod"] is True
    monkeypatch.setattr(handler, "execute_job", lambda *a, **k: 1 / 0)
    result = run_as_runpod({"id": "rp-job-internal", "input": sphere_request()})
    error = _error(result)
    assert error["code"] == "INTERNAL" and "ZeroDivisionError" in error["message"] and result["stopPod"] is True


def test_storage_outage_gives_storage_error(worker, runpod_api, monkeypatch):
    outage = MotoS3()
    monkeypatch.setenv("GEN3D_S3_ENDPOINT_URL", outage.endpoint)
    monkeypatch.setenv("GEN3D_S3_UPLOAD_ATTEMPTS", "2")
    outage.stop()                                        # S3 goes down before the upload
    result = run_as_runpod({"id": "rp-job-4", "input": sphere_request()})
    error = _error(result)
    assert error["code"] == "STORAGE" and error["stage"] == "upload" and error["retryable"] is True
    assert "after 2 tries" in error["message"]


def test_runpod_stopping_the_job_cancels_the_pipeline(worker, runpod_api, moto_s3, monkeypatch):
    """RunPod stops a job (cancel, timeout) by cancelling the handler's task; the pipeline must stop."""
    job = {"id": "rp-job-5", "input": sphere_request(**LONG)}
    outcomes = []
    execute_job = handler.execute_job

    def recording(*args, **kwargs):
        try:
            return execute_job(*args, **kwargs)
        except Gen3DError as exc:
            outcomes.append(exc.code)
            raise

    monkeypatch.setattr(handler, "execute_job", recording)

    async def scenario():
        task = asyncio.create_task(rp_job.run_job(handler.handler, job))
        while not runpod_api.progress("rp-job-5"):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())                  # returns once the job's thread has ended
    assert outcomes == ["CANCELLED"]         # the pipeline stopped early instead of finishing the job
    assert moto_s3.keys("gen3d/rp-job-5/") == []


def test_worker_reads_runpod_bucket_names(monkeypatch):
    for key in ("GEN3D_S3_BUCKET", "GEN3D_S3_ENDPOINT_URL", "GEN3D_S3_ACCESS_KEY_ID", "GEN3D_S3_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", "https://acc.r2.cloudflarestorage.com")
    monkeypatch.setenv("BUCKET_ACCESS_KEY_ID", "id")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("BUCKET_NAME", BUCKET)
    monkeypatch.setattr(handler, "_storage", None)
    storage = handler.get_storage()
    assert storage.config.region == "auto" and storage.config.bucket == BUCKET
    assert storage.url("j", "mesh.glb").startswith("https://acc.r2.cloudflarestorage.com/%s/gen3d/j/mesh.glb?" % BUCKET)


def test_script_path_and_the_sdks_local_api_server(tmp_path):
    """`python backend_remote/handler.py --rp_serve_api`: the script form imports (no relative-import
    error) and the SDK's own FastAPI test server answers a failed job with HTTP 200 and the contract
    error as a string (a dict made it answer 500 ResponseValidationError)."""
    from test_remote_support import free_port, httpx

    port = free_port()
    env = dict(os.environ, GEN3D_DEVICE="cpu", GEN3D_WORK_DIR=str(tmp_path))
    env.pop("PYTHONPATH", None)
    for key in [k for k in env if k.startswith(("GEN3D_S3_", "BUCKET_"))]:
        env.pop(key)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "backend_remote", "handler.py"), "--rp_serve_api",
                             "--rp_api_host", "127.0.0.1", "--rp_api_port", str(port)], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        response = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.post("http://127.0.0.1:%d/runsync" % port, timeout=30,
                                      json={"input": {"image_path": "/etc/passwd"}})
                break
            except httpx.HTTPError:
                time.sleep(0.3)
        assert response is not None, proc.communicate(timeout=10)[0][-3000:]
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "FAILED" and json.loads(body["error"])["code"] == "INVALID_INPUT"
    finally:
        proc.terminate()
        proc.wait(20)


def test_entry_point_runs_a_job_with_runpods_local_test_mode(moto_s3, tmp_path):
    """`python -m backend_remote.handler` (the image's CMD) goes through runpod.serverless.start; off
    RunPod the SDK runs the one job in ./test_input.json and exits 0 only if it succeeded."""
    (tmp_path / "test_input.json").write_text(json.dumps({"id": "rp-entry-1", "input": sphere_request()}))
    work = tmp_path / "work"
    env = dict(os.environ, PYTHONPATH=ROOT, GEN3D_DEVICE="cpu", GEN3D_WORK_DIR=str(work), **moto_s3.env)
    env.pop("RUNPOD_WEBHOOK_GET_JOB", None)
    result = subprocess.run([sys.executable, "-m", "backend_remote.handler"], cwd=str(tmp_path), env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "completed successfully" in result.stdout
    assert "gen3d/rp-entry-1/meta.json" in moto_s3.keys("gen3d/rp-entry-1/")
    assert os.listdir(work) == []                        # the work folder is cleaned after the upload
