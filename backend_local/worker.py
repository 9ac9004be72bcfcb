"""The stdio worker the Blender add-on spawns (`python -m backend_local serve`).

Protocol (newline-delimited JSON, DESIGN.md "Local backend"):
  in:  {"op": "submit", "job_id", "request", "out_dir"?} {"op": "cancel", "job_id"} {"op": "ping"} {"op": "shutdown", "finish"?}
  out: {"event": "ready"|"accepted"|"progress"|"completed"|"failed"|"cancelled"|"pong", ...}

Only protocol lines reach the real stdout: file descriptor 1 is re-pointed at stderr at start-up, so
prints from any library (Python or C) land in the log, not in the protocol stream. Jobs run one at a
time on a runner thread while the reader thread keeps answering ping and cancel. The worker exits
when stdin closes, cancelling its job, so it never outlives a Blender that crashed. When Blender
closes normally the add-on first sends shutdown with "finish": true: queued jobs are dropped, the
running one completes into its folder (the next Blender session imports it), then the worker exits.

`out_dir` on submit is our addition to DESIGN.md's message: the add-on decides where results go
(its output folder) so they survive the worker; without it, results go to OUT_ROOT/<job_id>.
"""

import json
import os
import sys
import tempfile
import threading

from shared.errors import CANCELLED, INTERNAL, INVALID_INPUT, Gen3DError
from shared.request import parse_request
from shared.version import API_VERSION, __version__


class ProtocolOut:
    """Thread-safe writer of protocol lines to the original stdout."""

    def __init__(self):
        sys.stdout.flush()
        self._stream = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        os.dup2(2, 1)                 # anything else written to fd 1 goes to stderr
        sys.stdout = sys.stderr
        self._lock = threading.Lock()

    def send(self, event, **fields):
        line = json.dumps(dict(event=event, **fields), separators=(",", ":"))
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass                  # Blender is gone; the reader will see EOF and stop us


class _Job:
    def __init__(self, job_id, request, out_dir):
        self.job_id = job_id
        self.request = request
        self.out_dir = out_dir
        self.cancel = threading.Event()


class Worker:
    def __init__(self, pipeline, out, out_root):
        self.pipeline = pipeline
        self.out = out
        self.out_root = out_root
        self.queue = []                       # pending _Job, in order
        self.current = None
        self.cond = threading.Condition()
        self.stopping = False
        self.finishing = False                # shutdown with "finish": the running job completes first

    # reader side -------------------------------------------------------------------------------
    def handle(self, line):
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self.out.send("failed", job_id=None, error=Gen3DError(INVALID_INPUT, "Unreadable worker message: %s"
                                                                  % exc).to_dict()["error"])
            return
        op = message.get("op")
        if op == "ping":
            self.out.send("pong", job_id=message.get("job_id"))
        elif op == "submit":
            self.submit(message)
        elif op == "cancel":
            self.cancel(message.get("job_id"))
        elif op == "shutdown" and message.get("finish"):
            self.finish()
        elif op == "shutdown":
            self.stop()
        else:
            self.out.send("failed", job_id=message.get("job_id"),
                          error=Gen3DError(INVALID_INPUT, "Unknown op %r." % (op,)).to_dict()["error"])

    def submit(self, message):
        job_id = str(message.get("job_id") or "")
        if not job_id or os.sep in job_id or job_id.startswith("."):
            self.out.send("failed", job_id=job_id or None,
                          error=Gen3DError(INVALID_INPUT, "submit needs a plain job_id.").to_dict()["error"])
            return
        try:
            request = parse_request(message.get("request"), allow_path=True)
        except Gen3DError as exc:
            exc.stage = "queued"
            self.out.send("failed", job_id=job_id, error=exc.to_dict()["error"])
            return
        out_dir = message.get("out_dir") or os.path.join(self.out_root, job_id)
        with self.cond:
            self.queue.append(_Job(job_id, request, out_dir))
            position = len(self.queue) + (1 if self.current else 0) - 1
            self.out.send("accepted", job_id=job_id, position=position, out_dir=out_dir)
            self.cond.notify()

    def cancel(self, job_id):
        with self.cond:
            for job in self.queue:
                if job.job_id == job_id:
                    self.queue.remove(job)
                    self.out.send("cancelled", job_id=job_id, stage="queued")
                    return
            if self.current is not None and self.current.job_id == job_id:
                self.current.cancel.set()     # the runner reports "cancelled" once the job stops
                return
        self.out.send("failed", job_id=job_id, error=Gen3DError(
            INVALID_INPUT, "No queued or running job %r to cancel." % (job_id,)).to_dict()["error"])

    def stop(self):
        with self.cond:
            self.stopping = True
            for job in self.queue:
                self.out.send("cancelled", job_id=job.job_id, stage="queued")
            self.queue.clear()
            if self.current is not None:
                self.current.cancel.set()
            self.cond.notify_all()

    def finish(self):
        """Blender is closing: queued jobs are cancelled, the running one completes (its result lands
        in its folder for the next session to import), then the worker exits. Blender's end of the
        pipes goes away, so from here on nothing is written to them."""
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in (1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        with self.cond:
            self.finishing = self.stopping = True
            self.queue.clear()
            self.cond.notify_all()

    # runner side -------------------------------------------------------------------------------
    def run_forever(self):
        while True:
            with self.cond:
                while not self.queue and not self.stopping:
                    self.cond.wait()
                if self.stopping:
                    return
                job = self.current = self.queue.pop(0)
            self._run(job)
            with self.cond:
                self.current = None

    def _run(self, job):
        def progress(event):
            self.out.send("progress", **event)

        try:
            manifest = self.pipeline.run(job.request, job.out_dir, job_id=job.job_id, on_progress=progress,
                                         cancel=job.cancel)
        except Gen3DError as exc:
            if exc.code == CANCELLED:
                self.out.send("cancelled", job_id=job.job_id, stage=exc.stage)
            else:
                self.out.send("failed", job_id=job.job_id, error=exc.to_dict()["error"])
            return
        except Exception as exc:  # the pipeline wraps errors; this is the last line of defence
            self.out.send("failed", job_id=job.job_id, error=Gen3DError(
                INTERNAL, "Worker error: %s" % exc).to_dict()["error"])
            return
        self.out.send("completed", job_id=job.job_id, out_dir=job.out_dir, manifest=manifest)


def serve(device="auto", out_root=None, low_memory=None, stdin=None):
    out = ProtocolOut()
    stdin = stdin or sys.stdin
    out_root = out_root or os.path.join(tempfile.gettempdir(), "gen3d-jobs")
    try:
        from .pipeline import Pipeline
        pipeline = Pipeline(device, low_memory=low_memory)
    except Gen3DError as exc:
        out.send("failed", job_id=None, error=exc.to_dict()["error"])
        return 2
    from . import device as devices
    worker = Worker(pipeline, out, out_root)
    runner = threading.Thread(target=worker.run_forever, name="gen3d-runner", daemon=True)
    runner.start()
    out.send("ready", version=__version__, api_version=API_VERSION, device=devices.describe(pipeline.device),
             pid=os.getpid(), engines=pipeline.registry.describe())
    for line in stdin:
        line = line.strip()
        if line:
            worker.handle(line)
        if worker.stopping:
            break
    if worker.finishing:
        runner.join()             # the running job completes; nobody is left to hear about it
        return 0
    worker.stop()                 # stdin closed (Blender exited) or shutdown: stop the running job
    runner.join(timeout=30)
    return 0
