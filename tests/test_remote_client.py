"""The add-on's REMOTE client (blender_addon/remote_client.py) in plain Python: against the live
self-hosted server, and against a scripted endpoint for the failure paths."""

import hashlib
import http.server
import json
import os
import threading
import time
import urllib.parse

import pytest
import requests

from blender_addon import remote_client
from blender_addon.remote_client import RUNPOD_API, RemoteClient, endpoint_base, remote_error
from blender_addon.settings import REMOTE, BackendSettings
from blender_addon.contract import Gen3DError        # the add-on's own copy of the contract
from shared.errors import CANCELLED, IMAGE_TOO_LARGE, INTERNAL, INVALID_INPUT, STORAGE, TIMEOUT, UNAUTHORIZED
from shared.manifest import read_manifest, verify_files

from test_remote_support import API_KEY, LONG, SMALL, SPHERE, closed_port_url

pytest_plugins = ["test_remote_support"]


def settings(url, key=API_KEY, **changes):
    return BackendSettings(backend=REMOTE, remote_url=url, api_key=key, **changes)


def request(**params):
    return dict(SMALL, image_path=SPHERE, **params)


def run(client, job_dir, job_id="0123456789abcdef", cancel=None, **params):
    events = []
    client.run(job_id, request(**params), str(job_dir), events.append, cancel or threading.Event())
    return events


def failure(client, job_dir, **kwargs):
    with pytest.raises(Gen3DError) as caught:
        run(client, job_dir, **kwargs)
    return caught.value


class HttpLog:
    """Records every HTTP call the client makes (API calls and downloads)."""

    def __init__(self, monkeypatch):
        self.calls = []
        real_request = requests.Session.request

        def session_request(session, method, url, *args, **kwargs):
            self.calls.append((method, urllib.parse.urlsplit(url).path))
            return real_request(session, method, url, *args, **kwargs)

        monkeypatch.setattr(requests.Session, "request", session_request)

    def downloads(self):
        return sorted(os.path.basename(path) for method, path in self.calls if path.startswith("/files/"))


# --- against the self-hosted server ------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_job(disk_server, tmp_path_factory):
    """One job run through the client: (folder holding the job folder, job folder, events)."""
    parent = tmp_path_factory.mktemp("client-jobs")
    job_dir = parent / "sphere-job"
    # Polled every 50 ms throughout (the client's default slows down to 2 s while nothing changes), so each
    # stage of this small job (the shape stage takes well under a second here) is seen.
    client = RemoteClient(settings(disk_server.url), poll_interval=0.05, max_poll_interval=0.05)
    events = run(client, job_dir, job_id="aaaaaaaaaaaaaaaa")
    return parent, job_dir, events


def test_job_downloads_and_verifies_the_result(finished_job):
    parent, job_dir, events = finished_job
    manifest = read_manifest(str(job_dir))
    assert verify_files(str(job_dir), manifest) == []
    assert sorted(os.listdir(job_dir)) == sorted(list(manifest["files"]) + ["meta.json", remote_client.STATE_FILE])
    assert "meta_url" not in manifest and all("url" not in info for info in manifest["files"].values())
    assert os.listdir(parent) == ["sphere-job"]                      # no staging folder left behind

    assert all(event["job_id"] == "aaaaaaaaaaaaaaaa" for event in events)
    values = [event["progress"] for event in events]
    assert values == sorted(values) and values[-1] == 1.0
    stages = [event["stage"] for event in events]
    assert stages[0] == "queued" and {"shape", "texture", "upload"} <= set(stages)


def test_a_downloaded_file_is_never_downloaded_again(disk_server, finished_job, tmp_path, monkeypatch):
    first = finished_job[1]
    manifest = read_manifest(str(first))

    # A second run of the same finished job: nothing is asked of the endpoint at all.
    log = HttpLog(monkeypatch)
    run(RemoteClient(settings(disk_server.url)), first, job_id="aaaaaaaaaaaaaaaa")
    assert log.calls == []

    # An interrupted run: the staging folder knows the remote job and holds all but two files.
    job_dir = tmp_path / "second"
    staging = tmp_path / ".second.remote"
    staging.mkdir()
    for name in manifest["files"]:
        if name not in ("ao.png", "mesh.glb"):
            (staging / name).write_bytes((first / name).read_bytes())
    (staging / "mesh.glb").write_bytes(b"half a file")
    digest = hashlib.sha256(json.dumps(request(), sort_keys=True).encode()).hexdigest()
    (staging / remote_client.STATE_FILE).write_text(json.dumps(
        {"endpoint": disk_server.url, "remote_id": manifest["job_id"], "request": digest}))
    run(RemoteClient(settings(disk_server.url)), job_dir, job_id="bbbbbbbbbbbbbbbb")
    assert ("POST", "/run") not in log.calls                          # resumed, not submitted again
    assert log.downloads() == ["ao.png", "mesh.glb"]
    assert verify_files(str(job_dir), read_manifest(str(job_dir))) == []


def test_wrong_key_and_bad_settings(disk_server, tmp_path):
    error = failure(RemoteClient(settings(disk_server.url, key="wrong")), tmp_path / "job")
    assert error.code == UNAUTHORIZED and "API key" in error.message and "Preferences" in error.message
    assert os.listdir(tmp_path) == []                                 # nothing left behind
    for bad, code in ((settings(""), INVALID_INPUT), (settings(disk_server.url, key=""), UNAUTHORIZED),
                      (settings("ftp://host/x"), INVALID_INPUT),
                      (settings(disk_server.url, online_access=False), INVALID_INPUT)):
        with pytest.raises(Gen3DError) as caught:
            RemoteClient(bad).check()
        assert caught.value.code == code and caught.value.message


def test_unreachable_endpoint_fails_with_a_clear_message(tmp_path):
    url = closed_port_url()
    started = time.monotonic()
    error = failure(RemoteClient(settings(url), network_patience=1.5), tmp_path / "job")
    assert error.code == INTERNAL and error.retryable
    assert "Cannot reach the remote endpoint %s" % url in error.message and "connection refused" in error.message
    assert time.monotonic() - started < 6


def test_cancel_stops_the_remote_job(disk_server, tmp_path):
    cancel = threading.Event()
    staging_state = tmp_path / ".job.remote" / remote_client.STATE_FILE
    outcome = {}

    def job():
        try:
            run(RemoteClient(settings(disk_server.url)), tmp_path / "job", job_id="cccccccccccccccc", cancel=cancel,
                **LONG)
        except Gen3DError as exc:
            outcome["error"] = exc
            outcome["at"] = time.monotonic()

    thread = threading.Thread(target=job)
    thread.start()
    deadline = time.monotonic() + 60
    while not staging_state.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    remote_id = json.loads(staging_state.read_text())["remote_id"]
    api = disk_server.client()
    while api.get("/status/%s" % remote_id).json()["status"] != "IN_PROGRESS":
        time.sleep(0.05)
    cancel.set()
    pressed = time.monotonic()
    thread.join(10)
    assert outcome["error"].code == CANCELLED and outcome["at"] - pressed < 2.0
    assert api.get("/status/%s" % remote_id).json()["status"] == "CANCELLED"
    assert os.listdir(tmp_path) == []


# --- against a scripted endpoint ---------------------------------------------------------------
class ScriptedEndpoint:
    """A RunPod-protocol endpoint whose answers the test decides; it also serves the result files."""

    def __init__(self, files, status_script=None, file_bytes=None, post_script=None):
        self.files = files                        # name -> bytes listed in the manifest
        self.file_bytes = file_bytes or files     # name -> bytes actually served
        self.status_script = list(status_script or [])
        self.post_script = list(post_script or [])    # answers to POST /run before the normal one
        self.hits = []
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _json(self, status, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.hits.append(("POST", self.path))
                if self.path == "/run" and endpoint.post_script:
                    step = endpoint.post_script.pop(0)
                    self._json(step[1], {"error": "busy"}, step[2] if len(step) > 2 else None)
                    return
                self._json(200, {"id": "remote-1", "status": "IN_QUEUE"})

            def do_GET(self):
                endpoint.hits.append(("GET", self.path))
                if self.path.startswith("/files/"):
                    data = endpoint.file_bytes[self.path.rsplit("/", 1)[1]]
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                step = endpoint.status_script.pop(0) if endpoint.status_script else ("COMPLETED", None)
                if step[0] == "HTTP":
                    self._json(step[1], {"error": "busy"}, step[2] if len(step) > 2 else None)
                elif step[0] == "COMPLETED":
                    self._json(200, {"id": "remote-1", "status": "COMPLETED", "output": endpoint.manifest()})
                else:
                    self._json(200, dict({"id": "remote-1", "status": step[0]}, **(step[1] or {})))

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def manifest(self):
        return {"api_version": "1", "job_id": "remote-1", "status": "completed", "engine": {}, "params": {},
                "seed": 1, "mesh": {"file": "mesh.glb"}, "textures": None, "timings": {}, "device": "cpu",
                "peak_memory_mb": 1.0, "meta_url": self.url + "/files/meta.json",
                "files": {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                 "url": self.url + "/files/" + name} for name, data in self.files.items()}}

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def endpoint_factory():
    made = []

    def make(*args, **kwargs):
        made.append(ScriptedEndpoint(*args, **kwargs))
        return made[-1]
    yield make
    for endpoint in made:
        endpoint.stop()


FILES = {"mesh.glb": b"glTF" + b"\1" * 5000, "input.png": b"\x89PNG" + b"\2" * 300}


def test_progress_busy_answers_and_runpod_style_status(endpoint_factory, tmp_path):
    progress = {"job_id": "remote-1", "stage": "shape", "progress": 0.3, "message": "shaping"}
    endpoint = endpoint_factory(FILES, status_script=[
        ("IN_QUEUE", None), ("HTTP", 503), ("HTTP", 429),
        ("IN_PROGRESS", {"output": progress}), ("IN_PROGRESS", {"output": dict(progress, progress=0.2)}),
        ("COMPLETED", None)])
    events = run(RemoteClient(settings(endpoint.url), poll_interval=0.01), tmp_path / "job")
    assert verify_files(str(tmp_path / "job"), read_manifest(str(tmp_path / "job"))) == []
    shape = [e for e in events if e["stage"] == "shape"]
    assert shape[0]["progress"] == 0.3 and shape[0]["job_id"] == "0123456789abcdef"
    assert all(e["progress"] >= 0.3 for e in events[events.index(shape[0]):])     # never goes back
    assert any("retrying" in e["message"] for e in events)


def test_damaged_download_is_refused(endpoint_factory, tmp_path):
    endpoint = endpoint_factory(FILES, file_bytes=dict(FILES, **{"mesh.glb": b"glTF" + b"\3" * 5000}))
    error = failure(RemoteClient(settings(endpoint.url), poll_interval=0.01, download_attempts=2), tmp_path / "job")
    assert error.code == STORAGE and "mesh.glb" in error.message and "sha256" in error.message
    assert not (tmp_path / "job").exists()
    assert [hit for hit in endpoint.hits if hit == ("GET", "/files/mesh.glb")] == [("GET", "/files/mesh.glb")] * 2


def test_unsafe_file_names_are_refused(endpoint_factory, tmp_path):
    endpoint = endpoint_factory({"../escape.glb": b"x", "mesh.glb": b"y"})
    error = failure(RemoteClient(settings(endpoint.url), poll_interval=0.01), tmp_path / "job")
    assert error.code == INTERNAL and "not a plain file name" in error.message
    assert not (tmp_path / "escape.glb").exists() and os.listdir(tmp_path) == []


def test_failed_and_timed_out_jobs(endpoint_factory, tmp_path):
    contract = {"code": "EMPTY_FOREGROUND", "message": "No object found.", "stage": "preprocess", "retryable": False}
    endpoint = endpoint_factory(FILES, status_script=[("FAILED", {"error": json.dumps(contract)})])
    error = failure(RemoteClient(settings(endpoint.url), poll_interval=0.01), tmp_path / "a")
    assert (error.code, error.message, error.stage) == ("EMPTY_FOREGROUND", "No object found.", "preprocess")
    endpoint = endpoint_factory(FILES, status_script=[("TIMED_OUT", None)])
    assert failure(RemoteClient(settings(endpoint.url), poll_interval=0.01), tmp_path / "b").code == TIMEOUT
    endpoint = endpoint_factory(FILES, status_script=[("IN_QUEUE", None)] * 1000)
    error = failure(RemoteClient(settings(endpoint.url), poll_interval=0.01, job_timeout=0.3), tmp_path / "c")
    assert error.code == TIMEOUT and ("POST", "/cancel/remote-1") in endpoint.hits


def test_helpers():
    assert endpoint_base("abc123xyz") == RUNPOD_API + "abc123xyz"
    assert endpoint_base("https://api.runpod.ai/v2/abc/") == "https://api.runpod.ai/v2/abc"
    assert endpoint_base("http://10.0.0.5:8000") == "http://10.0.0.5:8000"
    contract = {"code": "OUT_OF_MEMORY", "message": "Lower face_count.", "stage": "shape", "retryable": True}
    for form in (contract, {"error": contract}, json.dumps(contract), repr(contract), json.dumps(json.dumps(contract))):
        error = remote_error(form)
        assert (error.code, error.message, error.retryable) == ("OUT_OF_MEMORY", "Lower face_count.", True), form
    crash = json.dumps({"error_type": "<class 'KeyError'>", "error_message": "'x'", "error_traceback": "..."})
    assert remote_error(crash).code == INTERNAL and "crashed: 'x'" in remote_error(crash).message
    assert remote_error("GPU fell off the bus").message.endswith("GPU fell off the bus")


def test_image_too_large_is_refused_before_sending(tmp_path, monkeypatch):
    monkeypatch.setattr(remote_client.contract_request, "MAX_IMAGE_BYTES", 10)
    with pytest.raises(Gen3DError) as caught:
        remote_client.wire_request({"image_path": SPHERE})
    assert caught.value.code == IMAGE_TOO_LARGE


# --- issue 12: resume, replace, resend, give up, Retry-After -------------------------------------------
def _posts(endpoint):
    return [hit for hit in endpoint.hits if hit == ("POST", "/run")]


def test_post_run_is_not_resent_after_a_5xx(endpoint_factory, tmp_path):
    endpoint = endpoint_factory(FILES, post_script=[("HTTP", 503), ("HTTP", 503)])
    error = failure(RemoteClient(settings(endpoint.url), poll_interval=0.01, network_patience=5), tmp_path / "job")
    assert error.code == INTERNAL and error.retryable and "not sent again" in error.message
    assert _posts(endpoint) == [("POST", "/run")]


def test_a_429_with_retry_after_is_waited_out(endpoint_factory, tmp_path):
    """Retry-After longer than the network patience: waited for (it used to give up at once), with
    the submission resent after the 429 (refused, so not queued) and a status poll retried too."""
    endpoint = endpoint_factory(FILES, post_script=[("HTTP", 429, {"Retry-After": "1"})],
                                status_script=[("HTTP", 429, {"Retry-After": "2"}), ("COMPLETED", None)])
    started = time.monotonic()
    events = run(RemoteClient(settings(endpoint.url), poll_interval=0.01, network_patience=0.3), tmp_path / "job")
    assert time.monotonic() - started >= 3.0
    assert len(_posts(endpoint)) == 2 and verify_files(str(tmp_path / "job"), read_manifest(str(tmp_path / "job"))) == []
    assert any("retrying in 2 s" in event["message"] for event in events)


def test_jitter_spreads_retries_and_retry_after_forms():
    waits = {round(remote_client._jittered(1.0), 6) for _ in range(50)}
    assert len(waits) > 40 and all(1.0 <= wait <= 1.25 for wait in waits)

    class Answer:
        def __init__(self, value):
            self.headers = {"Retry-After": value} if value is not None else {}

    import email.utils
    later = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert remote_client.retry_after_s(Answer("120")) == 120.0
    assert 115 < remote_client.retry_after_s(Answer(later)) <= 120
    assert remote_client.retry_after_s(Answer("soon")) is None and remote_client.retry_after_s(Answer(None)) is None


def test_giving_up_polling_cancels_the_remote_job(endpoint_factory, tmp_path):
    endpoint = endpoint_factory(FILES, status_script=[("HTTP", 503)] * 1000)
    error = failure(RemoteClient(settings(endpoint.url), poll_interval=0.01, network_patience=0.6), tmp_path / "job")
    assert error.code == INTERNAL and "still failing" in error.message
    assert ("POST", "/cancel/remote-1") in endpoint.hits                 # not left running (and billing)
    assert os.listdir(tmp_path) == []                                     # no staging leftovers


def test_another_request_into_the_same_folder_runs_anew_and_replaces_the_result(endpoint_factory, tmp_path):
    first = endpoint_factory(FILES)
    job_dir = tmp_path / "job"
    run(RemoteClient(settings(first.url), poll_interval=0.01), job_dir)
    hits = len(first.hits)
    run(RemoteClient(settings(first.url), poll_interval=0.01), job_dir, job_id="fedcba9876543210")
    assert len(first.hits) == hits                                        # the same request: its result is here

    other_files = {"mesh.glb": b"glTF" + b"\x07" * 7000, "input.png": b"\x89PNG" + b"\x08" * 100}
    second = endpoint_factory(other_files)
    run(RemoteClient(settings(first.url), poll_interval=0.01), job_dir, seed=7)   # same endpoint, other settings
    assert len(_posts(first)) == 2                                        # asked the server again
    run(RemoteClient(settings(second.url), poll_interval=0.01), job_dir, engine="hunyuan3d-2")
    assert _posts(second) == [("POST", "/run")]
    assert (job_dir / "mesh.glb").read_bytes() == other_files["mesh.glb"]      # replaced, no "Directory not empty"
    assert verify_files(str(job_dir), read_manifest(str(job_dir))) == []
    assert os.listdir(tmp_path) == ["job"]


class _Crash(BaseException):
    """Blender killed mid-job: nothing gets to clean up."""


def test_a_job_interrupted_by_a_restart_is_resumed_not_resubmitted(endpoint_factory, tmp_path):
    endpoint = endpoint_factory(FILES, status_script=[("IN_PROGRESS", {"output": {
        "job_id": "remote-1", "stage": "shape", "progress": 0.4, "message": "shaping"}})] * 3 + [("COMPLETED", None)])
    job_dir = tmp_path / "job"

    def crash_on_shape(event):
        if event["stage"] == "shape":
            raise _Crash()

    with pytest.raises(_Crash):
        RemoteClient(settings(endpoint.url), poll_interval=0.01).run(
            "1111111111111111", request(), str(job_dir), crash_on_shape, threading.Event())
    assert os.listdir(tmp_path) == [".job.remote"]                        # one staging folder, named by the folder
    run(RemoteClient(settings(endpoint.url), poll_interval=0.01), job_dir, job_id="2222222222222222")
    assert _posts(endpoint) == [("POST", "/run")]                         # resumed the same remote job
    assert verify_files(str(job_dir), read_manifest(str(job_dir))) == [] and os.listdir(tmp_path) == ["job"]


def test_a_folder_with_other_files_is_refused_before_submitting(endpoint_factory, tmp_path):
    endpoint = endpoint_factory(FILES)
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "notes.txt").write_text("mine")
    error = failure(RemoteClient(settings(endpoint.url), poll_interval=0.01), tmp_path / "job")
    assert error.code == INVALID_INPUT and "other files" in error.message and endpoint.hits == []
    assert (tmp_path / "job" / "notes.txt").read_text() == "mine"


def test_runpod_error_strings_and_dicts_both_parse():
    contract = {"code": "STORAGE", "message": "Bucket down.", "stage": "upload", "retryable": True}
    for form in (json.dumps(contract), contract):
        assert remote_error(form).code == "STORAGE"
