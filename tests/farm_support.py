"""Processes for the farm tests and bench/farm.py: a real redis-server on a free loopback port
(append-only file, so a restart keeps its data), Celery workers as separate processes (each in its
own process group, so kill -9 takes the whole worker), all on 127.0.0.1."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Workers started with this PYTHONPATH import tests/farm_hooks/sitecustomize.py (held and stuck seeds).
HOOKS_DIR = os.path.join(ROOT, "tests", "farm_hooks")
HOOKED_PYTHONPATH = os.pathsep.join([HOOKS_DIR, ROOT])
# Short enough that a lost worker's job comes back within seconds; longer than any test job.
FARM_ENV = {"GEN3D_FARM_VISIBILITY_S": "110", "GEN3D_FARM_RESTORE_INTERVAL_S": "1"}
WORKER_JOB_TIMEOUT_S = 100


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary():
    return shutil.which("redis-server")


class RedisServer:
    def __init__(self, data_dir, password=None):
        self.data_dir = str(data_dir)
        self.password = password
        self.port = free_port()
        self.proc = None
        os.makedirs(self.data_dir, exist_ok=True)

    @property
    def url(self):
        auth = ":%s@" % self.password if self.password else ""
        return "redis://%s127.0.0.1:%d/0" % (auth, self.port)

    def start(self, timeout=10):
        cmd = [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.data_dir,
               "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
               "--logfile", os.path.join(self.data_dir, "redis.log")]
        if self.password:
            cmd += ["--requirepass", self.password]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ping():
                return self
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start on port %d" % self.port)

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)

    def ping(self):
        try:
            return self.client().ping()
        except Exception:
            return False

    def stop(self):
        """SIGTERM: Redis flushes its append-only file and exits (an outage, data kept)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)


class WorkerProcess:
    def __init__(self, queue_url, storage, env, log_dir, name, device="cpu", job_timeout=WORKER_JOB_TIMEOUT_S):
        self.queue_url = queue_url
        self.storage = storage
        self.env = env
        self.name = name
        self.device = device
        self.job_timeout = job_timeout
        self.log_path = os.path.join(str(log_dir), "%s.log" % name.split("@")[0])
        self.work_dir = os.path.join(str(log_dir), "%s-work" % name.split("@")[0])
        self.proc = None

    def start(self):
        cmd = [sys.executable, "-m", "backend_remote", "worker", "--queue", self.queue_url, "--storage", self.storage,
               "--device", self.device, "--name", self.name, "--job-timeout", str(self.job_timeout),
               "--work-dir", self.work_dir, "--log-level", "warning"]
        env = dict(os.environ, PYTHONPATH=ROOT, **FARM_ENV)
        env.update(self.env)
        env.pop("GEN3D_ALLOW_PRIVATE_URLS", None)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        return self

    def wait_ready(self, client, timeout=120):
        """Until the pool process has loaded the pipeline and beats (the worker key appears)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("worker %s exited:\n%s" % (self.name, self.log()))
            if client.get("gen3d:worker:%s" % self.name):
                return self
            time.sleep(0.1)
        raise RuntimeError("worker %s not ready:\n%s" % (self.name, self.log()))

    def pool_pids(self):
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill(self):
        """kill -9 of the whole worker (its Celery parent and pool process): a machine lost."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)       # warm shutdown: the running job finishes
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self):
        with open(self.log_path, errors="replace") as handle:
            return handle.read()


def job_events(client, job_id):
    """The events the workers sent for one job, oldest first: [(kind, worker, body)]."""
    found = []
    for _entry_id, fields in client.xrange("gen3d:events"):
        if fields.get("job_id") == job_id:
            found.append((fields["kind"], fields["worker"], json.loads(fields["body"])))
    return found
