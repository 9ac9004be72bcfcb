"""Does a Python have Gen3D's backend? One child process answers: Gen3D's version, torch's, CUDA, engines.

Used after "Set up local backend" and whenever the artist picks a Python in the preferences, so the
preferences confirm what they found in one line ("Gen3D 0.1.0, torch 2.13.0+cpu, CUDA: no, engines:
builtin; not installed: ..."). No bpy here; the child imports torch, so callers run this on a thread.
"""

import json
import os
import subprocess
import threading
from dataclasses import dataclass, field

from .worker_process import WorkerProcess

CHECK_TIMEOUT_S = 180.0       # importing torch and every engine module on a cold disk
MARK = "GEN3D-CHECK "          # the answer's line; anything else the libraries print is ignored
SET_UP_HINT = ('Press "Set up local backend" in Edit > Preferences > Add-ons > Gen3D, or choose the Python of an '
               'environment that has Gen3D (e.g. <project>/.venv/bin/python).')

PROBE = r"""
import json, sys
out = {"python": "%d.%d.%d" % tuple(sys.version_info[:3]), "executable": sys.executable}
try:
    from shared.version import __version__
    out["gen3d"] = __version__
    from backend_local.engines.registry import EngineRegistry
except Exception as exc:
    out["gen3d_error"] = "%s: %s" % (type(exc).__name__, exc)
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda"] = bool(torch.cuda.is_available())
    if out["cuda"]:
        out["cuda_device"] = torch.cuda.get_device_name(0)
except Exception as exc:
    out["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
if "gen3d_error" not in out:
    try:
        out["engines"] = EngineRegistry().describe()
    except Exception as exc:
        out["gen3d_error"] = "listing the engines failed: %s: %s" % (type(exc).__name__, exc)
sys.stdout.write("\n" + MARK + json.dumps(out) + "\n")
""".replace("MARK", repr(MARK))


@dataclass
class CheckResult:
    python: str
    ok: bool = False
    gen3d: str = ""
    torch: str = ""
    cuda: bool = False
    cuda_device: str = ""
    engines: list = field(default_factory=list)     # rows as `backend_local engines --json` gives them
    problem: str = ""                               # why it is not usable, with what to do

    def available_engines(self):
        return [row["name"] for row in self.engines if row.get("available")]

    def summary(self):
        """The preferences' check line."""
        if not self.ok:
            return self.problem
        others = [row["name"] for row in self.engines if not row.get("available")]
        cuda = "yes (%s)" % self.cuda_device if self.cuda and self.cuda_device else ("yes" if self.cuda else "no")
        text = "Gen3D %s, torch %s, CUDA: %s, engines: %s" % (
            self.gen3d, self.torch, cuda, ", ".join(self.available_engines()) or "none")
        return text + ("; not installed: %s" % ", ".join(others) if others else "")


def check_python(python, backend_dir="", timeout=CHECK_TIMEOUT_S):
    """CheckResult for python (blocking: run it on a thread). Run where the worker runs: in backend_dir,
    else in the Python's own folder, never where Blender was started (a checkout there would shadow
    what the Python has installed)."""
    result = CheckResult(python=python)
    if not python:
        result.problem = "No Python is set for the local backend. " + SET_UP_HINT
        return result
    if not os.path.isfile(python):
        result.problem = "The Python '%s' does not exist. %s" % (python, SET_UP_HINT)
        return result
    if os.name != "nt" and not os.access(python, os.X_OK):
        result.problem = "'%s' is not an executable program. %s" % (python, SET_UP_HINT)
        return result
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=timeout,
                              env=WorkerProcess(python, backend_dir).environment(),
                              cwd=backend_dir or os.path.dirname(os.path.abspath(python)),
                              encoding="utf-8", errors="replace")
    except subprocess.TimeoutExpired:
        result.problem = "'%s' did not answer within %d s. %s" % (python, timeout, SET_UP_HINT)
        return result
    except OSError as exc:
        result.problem = "Cannot run '%s' (%s). %s" % (python, exc.strerror or exc, SET_UP_HINT)
        return result
    answer = _answer(done.stdout)
    if answer is None:
        last = (done.stderr.strip().splitlines() or ["exit code %d" % done.returncode])[-1]
        result.problem = "'%s' is not a working Python (%s). %s" % (python, last, SET_UP_HINT)
        return result
    result.gen3d, result.torch = answer.get("gen3d", ""), answer.get("torch", "")
    result.cuda, result.cuda_device = bool(answer.get("cuda")), answer.get("cuda_device", "")
    result.engines = answer.get("engines") or []
    version = "Python %s" % answer.get("python", "?")
    if "gen3d_error" in answer:
        result.problem = "%s (%s) has no working Gen3D backend (%s). %s" % (python, version, answer["gen3d_error"],
                                                                            SET_UP_HINT)
    elif "torch_error" in answer:
        result.problem = "%s has Gen3D %s but no working torch (%s). %s" % (python, result.gen3d,
                                                                           answer["torch_error"], SET_UP_HINT)
    else:
        result.ok = True
    return result


def _answer(stdout):
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARK):
            try:
                return json.loads(line[len(MARK):])
            except ValueError:
                return None
    return None


class CheckCache:
    """Check results by (python, backend_dir), each check on its own thread; thread-safe."""

    def __init__(self, check=check_python):
        self._check = check
        self._lock = threading.Lock()
        self._results = {}
        self._running = set()

    def get(self, python, backend_dir=""):
        with self._lock:
            return self._results.get((python, backend_dir))

    def running(self, python, backend_dir=""):
        with self._lock:
            return (python, backend_dir) in self._running

    def any_running(self):
        with self._lock:
            return bool(self._running)

    def put(self, result, backend_dir=""):
        with self._lock:
            self._results[(result.python, backend_dir)] = result

    def start(self, python, backend_dir="", on_done=None):
        """Check in the background unless that check is already running; returns the thread or None."""
        key = (python, backend_dir)
        with self._lock:
            if key in self._running:
                return None
            self._running.add(key)

        def work():
            try:
                result = self._check(python, backend_dir)
            except Exception as exc:        # never leave the preferences saying "checking..." forever
                result = CheckResult(python=python, problem="Checking %s failed (%s). %s" % (python, exc, SET_UP_HINT))
            with self._lock:
                self._results[key] = result
                self._running.discard(key)
            if on_done is not None:
                on_done(result)

        thread = threading.Thread(target=work, name="gen3d-python-check", daemon=True)
        thread.start()
        return thread
