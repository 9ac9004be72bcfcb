"""A long job made of child processes (pip, `backend_local install`), run on a background thread.

The preferences' set-up and install buttons use it: the thread runs the commands one after another,
every output line goes to a log file, and the UI reads `snapshot()` from a timer on Blender's main
thread, so Blender never waits for a download. Cancel stops the running child and its children.
No bpy here.
"""

import os
import signal
import subprocess
import threading
import time

RUNNING = "RUNNING"
DONE = "DONE"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
STOP_GRACE_S = 3.0           # after SIGTERM, a child that has not exited is killed
LOG_MAX_LINE = 2000

ONLINE_ACCESS_OFF = ("Blender's online access is off, and this downloads packages from the internet. Allow it in "
                     "Edit > Preferences > System > Network (\"Allow Online Access\"), then try again.")


def online_gate(online_access):
    """(allowed, why not): the set-up and install buttons need Blender's online access."""
    return (True, "") if online_access else (False, ONLINE_ACCESS_OFF)


class TaskError(Exception):
    """A failure shown to the artist as is: what happened and what to do."""


class TaskCancelled(Exception):
    pass


class BackgroundTask:
    """Subclasses implement run(), calling run_process() and set_progress(); its return value is `result`."""

    title = "task"

    def __init__(self, log_path):
        self.log_path = log_path
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._proc = None
        self._thread = None
        self.state = RUNNING
        self.fraction = 0.0
        self.message = "starting"
        self.error = ""
        self.result = None
        self.started_at = time.monotonic()
        self.ended_at = None

    # life cycle --------------------------------------------------------------------------------
    def start(self):
        os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
        with open(self.log_path, "w", encoding="utf-8") as log:
            log.write("Gen3D %s, started %s\n" % (self.title, time.strftime("%Y-%m-%d %H:%M:%S")))
        self._thread = threading.Thread(target=self._main, name="gen3d-%s" % self.title, daemon=True)
        self._thread.start()
        return self

    def _main(self):
        try:
            result = self.run()
            self._finish(DONE, result=result)
        except TaskCancelled:
            self._finish(CANCELLED, message="cancelled")
        except TaskError as exc:
            self._finish(FAILED, error=str(exc))
        except Exception as exc:       # a bug here must still end the task with something readable
            self.log("unexpected error: %r" % (exc,))
            self._finish(FAILED, error="%s failed unexpectedly (%s). The log has the details: %s"
                                       % (self.title.capitalize(), exc, self.log_path))

    def _finish(self, state, result=None, error="", message=None):
        if self._cancel.is_set() and state == FAILED:
            state, error, message = CANCELLED, "", "cancelled"      # the kill made the command fail
        with self._lock:
            self.state, self.result, self.error = state, result, error
            if state == DONE:
                self.fraction = 1.0
            if message is not None:
                self.message = message
            self.ended_at = time.monotonic()
        self.log("%s: %s" % (state, error or self.message))

    def run(self):
        raise NotImplementedError

    def cancel(self):
        """Ask the task to stop; the running child process gets SIGTERM, then SIGKILL."""
        self._cancel.set()
        with self._lock:
            proc = self._proc
        if proc is not None:
            threading.Thread(target=_stop_process, args=(proc,), daemon=True).start()

    def wait(self, timeout=None):
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state

    @property
    def finished(self):
        return self.state != RUNNING

    def snapshot(self):
        with self._lock:
            return {"state": self.state, "fraction": self.fraction, "message": self.message, "error": self.error,
                    "log_path": self.log_path, "elapsed_s": (self.ended_at or time.monotonic()) - self.started_at}

    # for run() ---------------------------------------------------------------------------------
    def check_cancelled(self):
        if self._cancel.is_set():
            raise TaskCancelled()

    def set_progress(self, fraction=None, message=None):
        with self._lock:
            if fraction is not None:
                self.fraction = max(self.fraction, min(1.0, float(fraction)))   # never moves backwards
            if message is not None:
                self.message = message

    def log(self, text):
        with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
            log.write(text[:LOG_MAX_LINE] + "\n")

    def run_process(self, argv, on_line=None, env=None, cwd=None):
        """Run argv to the end, each output line (stdout and stderr) logged and passed to on_line.
        Returns the exit code; raises TaskCancelled when cancel() stopped it."""
        self.check_cancelled()
        self.log("$ " + " ".join(argv))
        popen_extra = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW}
                       if os.name == "nt" else {"start_new_session": True})   # cancel stops pip's children too
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=env, cwd=cwd, text=True, encoding="utf-8", errors="replace", bufsize=1,
                                    **popen_extra)
        except OSError as exc:
            raise TaskError("Cannot run %s (%s)." % (argv[0], exc.strerror or exc))
        with self._lock:
            self._proc = proc
        if self._cancel.is_set():            # cancelled between the check and the start
            _stop_process(proc)
        try:
            with open(self.log_path, "a", encoding="utf-8", errors="replace") as log:
                for line in proc.stdout:
                    line = line.rstrip("\r\n")
                    log.write(line[:LOG_MAX_LINE] + "\n")
                    log.flush()
                    if on_line is not None and not self._cancel.is_set():
                        on_line(line)
            code = proc.wait()
        finally:
            with self._lock:
                self._proc = None
        self.log("(exit code %s)" % code)
        self.check_cancelled()
        return code


def _stop_process(proc):
    if proc.poll() is not None:
        return                                      # already exited: its id may belong to someone else now
    try:
        if os.name == "nt":
            proc.terminate()
        else:
            os.killpg(proc.pid, signal.SIGTERM)     # its own session: pip and what pip started
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            if os.name == "nt":
                proc.kill()
            else:
                os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    except OSError:
        pass                                        # already gone
