"""Which engines the local backend can run here, and why not: what the engine menu shows.

Filled by `python -m backend_local engines --json`, run on a background thread (importing torch takes
seconds, and Blender must not freeze), and refreshed from every local worker's "ready" event, which
carries the same rows. No bpy here: the panel reads `describe()` on the main thread.
"""

import json
import subprocess
import threading

from .worker_process import WorkerProcess

CHECK_TIMEOUT_S = 120.0
NO_PYTHON = ('No Python is set for the local backend: press "Set up local backend" in Edit > Preferences > '
             'Add-ons > Gen3D, or choose the Python of an environment that has Gen3D there.')


class EngineStatus:
    def __init__(self):
        self._lock = threading.Lock()
        self._rows = {}          # (python, backend_dir) -> {engine name: row}
        self._errors = {}        # (python, backend_dir) -> why the check failed
        self._checking = set()

    @staticmethod
    def key(settings):
        return (settings.python, settings.backend_dir)

    def update(self, settings, rows):
        """Store rows as `backend_local engines --json` (or a worker's ready event) gives them."""
        with self._lock:
            self._rows[self.key(settings)] = {row["name"]: row for row in rows or [] if "name" in row}
            self._errors.pop(self.key(settings), None)

    def checking(self, settings):
        with self._lock:
            return self.key(settings) in self._checking

    def checked(self, settings):
        with self._lock:
            return self.key(settings) in self._rows or self.key(settings) in self._errors

    def refresh(self, settings):
        """Start a background check unless one is running. Returns the thread (or None)."""
        key = self.key(settings)
        with self._lock:
            if key in self._checking:
                return None
            self._checking.add(key)
        thread = threading.Thread(target=self._check, args=(settings,), name="gen3d-engines", daemon=True)
        thread.start()
        return thread

    def _check(self, settings):
        key = self.key(settings)
        if not settings.python:       # running "" would only say "[Errno 13] Permission denied: ''"
            with self._lock:
                self._errors[key] = NO_PYTHON
                self._checking.discard(key)
            return
        worker = WorkerProcess(settings.python, settings.backend_dir)
        command = [settings.python, "-m", "backend_local", "engines", "--json"]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=CHECK_TIMEOUT_S,
                                  env=worker.environment(), cwd=settings.backend_dir or None)
            if done.returncode != 0:
                raise RuntimeError((done.stderr.strip().splitlines() or ["exit code %d" % done.returncode])[-1])
            self.update(settings, json.loads(done.stdout))
        except (OSError, ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
            with self._lock:
                self._errors[key] = "Cannot list the engines with %s (%s). Check the Python executable in the " \
                                    "add-on preferences." % (settings.python or "no Python set", exc)
        finally:
            with self._lock:
                self._checking.discard(key)

    def describe(self, settings, name):
        """(available: True/False/None, text) for the panel; None = not known yet."""
        key = self.key(settings)
        with self._lock:
            if key in self._errors:
                return None, self._errors[key]
            row = self._rows.get(key, {}).get(name)
            checking = key in self._checking
        if row is None:
            return None, "checking which engines can run here..." if checking else "not checked yet"
        if row.get("available"):
            return True, "%s can run here" % name
        return False, row.get("reason") or "%s cannot run here" % name

    def memory_lines(self, settings, name):
        """How the engine's stages run on common GPU sizes, from the backend's memory planner ("24 GB:
        shape resident, texture resident"); an 80 GB line only when it differs from the 24 GB one."""
        with self._lock:
            memory = (self._rows.get(self.key(settings), {}).get(name) or {}).get("memory") or {}
        sizes = sorted((size for size in memory if size.isdigit()), key=int, reverse=True)
        if "80" in memory and memory.get("80") == memory.get("24"):
            sizes.remove("80")
        return ["%s GB: %s" % (size, memory[size]) for size in sizes]


status = EngineStatus()
