"""Helpers and fixtures for the remote-backend tests (loaded with `pytest_plugins`, so each server
fixture starts once per session): the self-hosted server in a subprocess, a moto S3 server and a
small image server, all on 127.0.0.1 with free ports."""

import base64
import contextlib
import hashlib
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import httpx
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPHERE = os.path.join(ROOT, "tests", "data", "sphere", "input.png")
API_KEY = "test-key-7f3a9c"
BUCKET = "gen3d-test"
# Small jobs (about 2 s on CPU); a LONG job (octree 256) runs long enough to be cancelled or killed.
SMALL = {"face_count": 5000, "texture_size": 512, "octree_resolution": 64}
# A server whose image_url may reach this machine's image site (tests only).
LOOPBACK_ENV = {"GEN3D_ALLOW_PRIVATE_URLS": "127.0.0.0/8"}
LONG = {"face_count": 5000, "texture_size": 512, "octree_resolution": 256}


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sphere_bytes():
    with open(SPHERE, "rb") as handle:
        return handle.read()


def sphere_request(**params):
    return dict(SMALL, image=base64.b64encode(sphere_bytes()).decode("ascii"), **params)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# --- the self-hosted server ----------------------------------------------------------------------
class ServerProcess:
    """`python -m backend_remote serve` on 127.0.0.1 in a subprocess; its data dir survives restarts."""

    def __init__(self, data_dir, storage=None, env=None, extra_args=()):
        self.data_dir = str(data_dir)
        self.storage = storage
        self.env = env or {}
        self.extra_args = list(extra_args)
        self.key_file = os.path.join(self.data_dir, "api-keys.txt")
        self.log_path = os.path.join(self.data_dir, "server.log")
        self.port = None
        self.proc = None
        os.makedirs(self.data_dir, exist_ok=True)
        with open(self.key_file, "w") as handle:
            handle.write("# test keys\n%s\nsecond-key-unused\n" % API_KEY)
        os.chmod(self.key_file, 0o600)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def start(self, timeout=90):
        self.port = free_port()
        cmd = [sys.executable, "-m", "backend_remote", "serve", "--host", "127.0.0.1", "--port", str(self.port),
               "--api-key-file", self.key_file, "--data-dir", self.data_dir, "--device", "cpu"] + self.extra_args
        if self.storage:
            cmd += ["--storage", self.storage]
        env = dict(os.environ, PYTHONPATH=ROOT)
        env.pop("GEN3D_ALLOW_PRIVATE_URLS", None)      # the server must refuse private URLs as deployed
        env.update(self.env)                           # ...unless a test opts in
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited with %s:\n%s" % (self.proc.returncode, self.log()))
            try:
                if httpx.get(self.url + "/health", headers=auth(), timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError("server did not start:\n%s" % self.log())

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self):
        """SIGKILL: a crash, with no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def client(self, key=API_KEY):
        return httpx.Client(base_url=self.url, headers=auth(key), timeout=30)


def auth(key=API_KEY):
    return {"Authorization": "Bearer %s" % key}


def wait_for(api, job_id, statuses, timeout=120):
    """Poll /status until the job is in one of `statuses`; returns the status body."""
    deadline = time.monotonic() + timeout
    body = None
    while time.monotonic() < deadline:
        body = api.get("/status/%s" % job_id).json()
        if body["status"] in statuses:
            return body
        time.sleep(0.1)
    raise AssertionError("job %s still %s after %s s" % (job_id, body and body["status"], timeout))


def check_downloads(manifest):
    """Download every file by its URL (no API key) and compare with the manifest. Returns the bytes."""
    files = {}
    for name, info in manifest["files"].items():
        response = httpx.get(info["url"], timeout=30)
        assert response.status_code == 200, (name, response.status_code, response.text[:200])
        assert len(response.content) == info["bytes"] and sha256(response.content) == info["sha256"], name
        files[name] = response.content
    meta = httpx.get(manifest["meta_url"], timeout=30)
    assert meta.status_code == 200
    files["meta.json"] = meta.content
    return files


@pytest.fixture(scope="session")
def disk_server(tmp_path_factory):
    server = ServerProcess(tmp_path_factory.mktemp("disk-server")).start()
    yield server
    server.stop()


# --- moto S3 -----------------------------------------------------------------------------------
class MotoS3:
    def __init__(self):
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        host, port = self.server.get_host_and_port()
        self.endpoint = "http://%s:%d" % (host, port)
        self.env = {"GEN3D_S3_ENDPOINT_URL": self.endpoint, "GEN3D_S3_BUCKET": BUCKET,
                    "GEN3D_S3_ACCESS_KEY_ID": "testing", "GEN3D_S3_SECRET_ACCESS_KEY": "testing",
                    "GEN3D_S3_REGION": "us-east-1", "GEN3D_S3_RETRY_BACKOFF_S": "0.05"}
        self.s3 = self.client()
        self.s3.create_bucket(Bucket=BUCKET)

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, prefix=""):
        listed = self.s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def stop(self):
        self.server.stop()


@pytest.fixture(scope="session")
def moto_s3():
    server = MotoS3()
    yield server
    server.stop()


def closed_port_url():
    """An http URL on 127.0.0.1 where nothing listens (a storage outage)."""
    return "http://127.0.0.1:%d" % free_port()


# --- a small image server ------------------------------------------------------------------------
class _ImageHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        site = self.server.site
        site.requests.append((self.path, self.headers.get("Host")))
        parts = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        if parts.path == "/sphere.png":
            self._send(200, sphere_bytes(), "image/png")
        elif parts.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", query["to"])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/loop":
            self.send_response(302)
            self.send_header("Location", "/loop")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(10 ** 9))
            self.end_headers()
        elif parts.path == "/undeclared-big":      # no Content-Length: only counting stops it
            self.send_response(200)
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(256):          # 16 MB
                    self.wfile.write(b"\0" * 65536)
        elif parts.path == "/drip":             # 200, then one byte every half second (slowloris in reverse)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", "100000")
            self.end_headers()
            site.drips += 1
            with contextlib.suppress(OSError):
                for _ in range(100000):
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.5)
            site.drips -= 1
        elif parts.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            time.sleep(3)
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status, body, kind):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class ImageSite:
    def __init__(self):
        self.requests = []
        self.drips = 0                  # /drip responses still being sent
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
        self.httpd.daemon_threads = True
        self.httpd.site = self
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path, host="127.0.0.1"):
        return "http://%s:%d%s" % (host, self.port, path)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def image_site():
    site = ImageSite()
    yield site
    site.stop()
