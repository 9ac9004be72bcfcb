""""Install engine": runs `python -m backend_local install ENGINE --json-progress` in the background.

The command prints one JSON object per line; this module is the one place the add-on knows that
protocol (the constants below), so it changes here only:
    {"event": "progress", "stage": ..., "fraction": 0..1, "message": ...}   any number of times
    {"event": "done", ...}                                                   once, at the end
    {"event": "error", "code": <DESIGN.md error code>, "message": ...}       instead of done
Other lines (pip, compilers, download bars) only go to the log. No bpy here.
"""

import json
import os

from .background_task import BackgroundTask, TaskError
from .worker_process import WorkerProcess

# -- the protocol of `backend_local install` -------------------------------------------------------
INSTALL_ARGS = ("-u", "-m", "backend_local", "install", "{engine}", "--json-progress")
EVENT = "event"
PROGRESS = "progress"       # fields: stage, fraction (0..1), message
DONE = "done"               # fields: anything; "message" is shown when present
ERROR = "error"             # fields: code, message (already says what to do)
EVENTS = (PROGRESS, DONE, ERROR)
# ---------------------------------------------------------------------------------------------------

STAGE_NAMES = {"packages": "installing packages", "source": "fetching the source", "build": "building",
               "weights": "downloading weights", "check": "checking"}
UPDATE_HINT = ("This backend has no install command yet: press Set up local backend to update it, then try "
               "again.")


def install_command(python, engine):
    return [python] + [arg.format(engine=engine) for arg in INSTALL_ARGS]


def parse_event(line):
    """The protocol event on this line (a dict with a known "event"), or None for any other output."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        event = json.loads(text)
    except ValueError:
        return None
    if not isinstance(event, dict) or event.get(EVENT) not in EVENTS:
        return None
    if event[EVENT] == PROGRESS:
        try:
            event["fraction"] = min(1.0, max(0.0, float(event.get("fraction") or 0.0)))
        except (TypeError, ValueError):
            event["fraction"] = 0.0
    return event


def progress_text(event):
    stage = str(event.get("stage") or "")
    message = str(event.get("message") or "")
    label = STAGE_NAMES.get(stage, stage)
    return "%s: %s" % (label, message) if label and message else (label or message or "working")


def error_text(engine, event):
    code = event.get("code") or "INTERNAL"
    message = str(event.get("message") or "the installer gave no reason")
    return "Installing %s failed (%s): %s" % (engine, code, message)


class EngineInstallTask(BackgroundTask):
    title = "engine install"

    def __init__(self, python, engine, log_path, backend_dir=""):
        super().__init__(log_path)
        self.python = python
        self.engine = engine
        self.backend_dir = backend_dir
        self.error_event = None
        self.done_event = None
        self._last_lines = []

    def _on_line(self, line):
        event = parse_event(line)
        if event is None:
            if line.strip():
                self._last_lines = (self._last_lines + [line.strip()])[-3:]
            return
        kind = event[EVENT]
        if kind == PROGRESS:
            self.set_progress(event["fraction"], progress_text(event))
        elif kind == ERROR:
            self.error_event = event
        elif kind == DONE:
            self.done_event = event

    def run(self):
        self.set_progress(0.0, "starting the installer for %s" % self.engine)
        code = self.run_process(install_command(self.python, self.engine), on_line=self._on_line,
                                env=WorkerProcess(self.python, self.backend_dir).environment(),
                                cwd=self.backend_dir or os.path.dirname(os.path.abspath(self.python)))
        if self.error_event is not None:
            raise TaskError(error_text(self.engine, self.error_event))
        if code != 0 or self.done_event is None:
            tail = " ".join(self._last_lines)
            if "invalid choice: 'install'" in tail or "No module named backend_local" in tail:
                raise TaskError("Installing %s failed: %s %s" % (self.engine, tail, UPDATE_HINT))
            raise TaskError("Installing %s stopped (exit code %s) without finishing%s. The log has the installer's "
                            "output: %s" % (self.engine, code, ": " + tail if tail else "", self.log_path))
        message = str(self.done_event.get("message") or "%s is installed" % self.engine)
        self.set_progress(1.0, message)
        return self.done_event
