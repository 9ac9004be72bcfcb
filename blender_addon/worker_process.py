"""One `python -m backend_local serve` child process and its newline-delimited JSON protocol.

Two daemon threads read the child's pipes: stdout lines become events on a queue, stderr lines go to
a bounded tail (shown to the user when the worker dies) and to the worker log file. Nothing here
touches bpy. When the child's stdout closes, the reader queues an EXITED event carrying the exit code.
"""

import collections
import json
import os
import queue
import subprocess
import threading
import time

from .client_base import cancelled
from .contract import Gen3DError, errors

EXITED = "exited"                    # our own event: the child is gone
READY_TIMEOUT_S = 180.0              # importing torch and loading engines on a cold disk takes a while
STOP_GRACE_S = 2.0
TAIL_LINES = 40
LOG_MAX_BYTES = 4 * 1024 * 1024
STDERR_DRAIN_S = 1.0


class WorkerProcess:
    def __init__(self, python, backend_dir="", device="auto", low_memory=False, log_path=""):
        self.python = python
        self.backend_dir = backend_dir
        self.device = device
        self.low_memory = low_memory
        self.log_path = log_path
        self.events = queue.Queue()
        self.info = {}                # the "ready" event: version, device, pid, engines
        self._proc = None
        self._tail = collections.deque(maxlen=TAIL_LINES)
        self._tail_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._log = None
        self._stderr_thread = None

    # lifecycle ---------------------------------------------------------------------------------
    def command(self):
        cmd = [self.python, "-u", "-m", "backend_local", "serve", "--device", self.device or "auto"]
        if self.low_memory:
            cmd.append("--low-memory")
        return cmd

    def environment(self):
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)          # Blender's own Python home must not leak into the venv
        env["PYTHONUNBUFFERED"] = "1"        # stderr lines arrive as they are written
        if self.backend_dir:
            env["PYTHONPATH"] = os.pathsep.join([self.backend_dir] + [p for p in [env.get("PYTHONPATH")] if p])
        return env

    def start(self, cancel_event=None, timeout=READY_TIMEOUT_S):
        """Spawn the worker and wait for its "ready" event. Raises Gen3DError with the log tail."""
        self._open_log()
        try:
            self._proc = subprocess.Popen(
                self.command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=self.backend_dir or None, env=self.environment(), text=True, encoding="utf-8",
                errors="replace", bufsize=1,
                creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0) if os.name == "nt" else 0,
                # Its own session: a terminal's Ctrl-C or hang-up aimed at Blender does not kill the job.
                start_new_session=os.name != "nt")
        except OSError as exc:
            self._close_log()
            raise Gen3DError(errors.ENGINE_UNAVAILABLE, "Cannot start the local worker with %s (%s). Check the "
                             "Python executable in the Gen3D add-on preferences." % (self.python, exc.strerror or exc),
                             stage="queued", retryable=False)
        threading.Thread(target=self._read_stdout, name="gen3d-worker-out", daemon=True).start()
        self._stderr_thread = threading.Thread(target=self._read_stderr, name="gen3d-worker-err", daemon=True)
        self._stderr_thread.start()
        deadline = time.monotonic() + timeout
        while True:
            if cancel_event is not None and cancel_event.is_set():
                self.kill()
                raise cancelled("queued")
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                if time.monotonic() > deadline:
                    self.kill()
                    raise self._start_error("did not answer within %d seconds" % timeout)
                continue
            kind = event.get("event")
            if kind == "ready":
                self.info = event
                return self
            if kind == "failed":                  # the pipeline could not be built (e.g. no CUDA)
                self.stop()
                err = Gen3DError.from_dict(event.get("error") or {})
                err.stage = "queued"
                raise err
            if kind == EXITED:
                raise self._start_error("exited with code %s" % event.get("code"))

    def _start_error(self, what):
        tail = self.stderr_tail(12)
        text = "\n".join(tail)
        hint = ""
        if "No module named 'backend_local'" in text or "No module named backend_local" in text:
            hint = (" This Python cannot find Gen3D's backend: set 'Backend folder' in the add-on preferences to the "
                    "Gen3D project folder (the one holding backend_local/).")
        elif "No module named" in text:
            hint = (" This Python lacks the backend's packages: choose the Python of the Gen3D environment "
                    "(scripts/setup.sh creates .venv/bin/python in the project folder).")
        return Gen3DError(errors.ENGINE_UNAVAILABLE, "The local worker (%s) %s before it was ready.%s%s" % (
            self.python, what, hint, log_excerpt(tail, self.log_path)), stage="queued", retryable=False)

    @property
    def pid(self):
        return self._proc.pid if self._proc else None

    def alive(self):
        return self._proc is not None and self._proc.poll() is None

    def exit_code(self):
        return self._proc.poll() if self._proc else None

    def send(self, message):
        """Write one protocol line; False when the worker is gone (its EXITED event follows)."""
        line = json.dumps(message, separators=(",", ":")) + "\n"
        with self._send_lock:
            try:
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
                return True
            except (OSError, ValueError, AttributeError):
                return False

    def stop(self, grace=STOP_GRACE_S):
        """Ask the worker to stop (shutdown, then stdin closed), kill it if it lingers."""
        if self._proc is None:
            return
        if self.alive():
            self.send({"op": "shutdown"})
            try:
                self._proc.stdin.close()
            except OSError:
                pass
            try:
                self._proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()

    def detach(self):
        """Blender is closing: the worker completes the job it holds (its result stays in the job
        folder for the next session), then exits by itself. Queued jobs are dropped."""
        if self._proc is None or not self.alive():
            return
        self.send({"op": "shutdown", "finish": True})
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        self._close_log()

    def kill(self):
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            try:
                self._proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
        self._close_log()

    # pipes -------------------------------------------------------------------------------------
    def _read_stdout(self):
        proc = self._proc
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:                 # not protocol: keep it with the log
                self._note(line)
                continue
            if isinstance(event, dict):
                self.events.put(event)
        self.events.put({"event": EXITED, "code": proc.wait()})

    def _read_stderr(self):
        for line in self._proc.stderr:
            self._note(line.rstrip("\n"))

    def _note(self, line):
        with self._tail_lock:
            self._tail.append(line)
            if self._log is not None:
                try:
                    self._log.write(line + "\n")
                    self._log.flush()
                except (OSError, ValueError):
                    self._log = None

    def stderr_tail(self, lines=TAIL_LINES):
        """The last lines the worker wrote to stderr. Once it has exited, its last words may still be in
        the pipe when stdout closes, so wait briefly for the stderr reader to finish."""
        if self._stderr_thread is not None and not self.alive():
            self._stderr_thread.join(STDERR_DRAIN_S)
        with self._tail_lock:
            return [line for line in list(self._tail)[-lines:]]

    def _open_log(self):
        if not self.log_path:
            return
        try:
            os.makedirs(os.path.dirname(self.log_path), exist_ok=True)
            if os.path.isfile(self.log_path) and os.path.getsize(self.log_path) > LOG_MAX_BYTES:
                os.replace(self.log_path, self.log_path + ".1")
            self._log = open(self.log_path, "a", encoding="utf-8")
            self._log.write("==== %s  %s\n" % (time.strftime("%Y-%m-%d %H:%M:%S"), " ".join(self.command())))
            self._log.flush()
        except OSError:
            self._log = None                   # a log is a convenience; the tail is kept in memory anyway

    def _close_log(self):
        with self._tail_lock:
            if self._log is not None:
                try:
                    self._log.close()
                except OSError:
                    pass
                self._log = None


def log_excerpt(tail, log_path=""):
    """' Last lines of its log: ...' for error messages; '' when there is nothing to show."""
    where = " (full log: %s)" % log_path if log_path else ""
    if not tail:
        return " The worker wrote nothing to its log%s." % where
    return " Last lines of its log%s:\n%s" % (where, "\n".join(tail))
