"""The local backend's set-up in the add-on preferences: choose or check a Python, "Set up local
backend", "Install engine", with progress, Cancel and a log, never blocking Blender.

The work runs in background_task threads (backend_setup.py, engine_install.py, python_check.py have
no bpy); one bpy.app.timers callback, poll_tasks(), redraws the preferences while something runs and
applies finished results on the main thread (the Python field, the engine menu's status).
"""

import os
import sys
import textwrap

import bpy
from bpy.props import StringProperty

from . import backend_setup, engine_status, prefs
from .background_task import DONE, FAILED, RUNNING, online_gate
from .contract import request as contract_request
from .engine_install import EngineInstallTask
from .python_check import CheckCache

POLL_S = 0.5
WRAP_CHARS = 90
SETUP = "setup"

checks = CheckCache()
tasks = {}               # SETUP or an engine name -> its BackgroundTask (the latest one)
_handled = set()         # ids of finished tasks whose result was applied
_file_browser = {}       # the hidden-files preference while our file browser is open


def env_dir():
    """The add-on's own environment (backend_setup.env_dir_for: beside Blender's per-version folders)."""
    return backend_setup.env_dir_for(bpy.utils.resource_path("USER"))


def _settings():
    return prefs.backend_settings(prefs.get_prefs())


def _key(settings):
    return settings.python, settings.backend_dir


def _running(name):
    task = tasks.get(name)
    return task is not None and not task.finished


def _gate(cls):
    allowed, why = online_gate(prefs.online_access())
    if not allowed and hasattr(cls, "poll_message_set"):
        cls.poll_message_set(why)
    return allowed


# checks ------------------------------------------------------------------------------------------
def start_check(settings=None):
    """Check the configured Python in the background; the engine menu learns its engines too."""
    settings = settings or _settings()

    def done(result):
        if result.ok:
            engine_status.status.update(settings, result.engines)

    thread = checks.start(settings.python, settings.backend_dir, on_done=done)
    _ensure_timer()
    return thread


def python_changed(prefs_self, context):
    """Update callback of the Python field: check the chosen Python at once."""
    start_check()


# the timer ---------------------------------------------------------------------------------------
def _busy():
    return checks.any_running() or any(not task.finished for task in tasks.values())


def _ensure_timer():
    if bpy.app.background:
        return             # no timer loop (and a pending timer keeps the bpy module from exiting): callers pump
    if not bpy.app.timers.is_registered(_timer):
        bpy.app.timers.register(_timer, first_interval=POLL_S)


def _timer():
    poll_tasks()
    _redraw_preferences()
    return POLL_S if _busy() else None


def _redraw_preferences():
    wm = bpy.context.window_manager
    for window in (wm.windows if wm else ()):
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()


def poll_tasks():
    """Apply finished tasks on the main thread (the timer calls it; background scripts call it too)."""
    for name, task in list(tasks.items()):
        if not task.finished or id(task) in _handled:
            continue
        _handled.add(id(task))
        settings = _settings()
        if name == SETUP and task.state == DONE:
            result = task.result
            checks.put(result, "")
            addon_prefs = prefs.get_prefs()
            if addon_prefs is not None:
                addon_prefs.python_path = task.python      # its update callback re-checks; the result is there
            engine_status.status.update(prefs.backend_settings(addon_prefs), result.engines)
        elif name != SETUP and task.state in (DONE, FAILED):
            engine_status.status.refresh(settings)         # the engine menu and the check line learn what changed
            start_check(settings)


# operators ---------------------------------------------------------------------------------------
class GEN3D_OT_setup_backend(bpy.types.Operator):
    bl_idname = "gen3d.setup_backend"
    bl_label = "Set up local backend"
    bl_description = ("Create the add-on's own Python environment and install torch and Gen3D's backend into it "
                      "(downloads about 1-4 GB from PyPI and PyTorch's index)")

    @classmethod
    def poll(cls, context):
        return _gate(cls) and not _running(SETUP)

    def execute(self, context):
        source = backend_setup.backend_source_dir()
        folder = env_dir()
        task = backend_setup.SetupTask(folder, source, os.path.join(os.path.dirname(folder), "setup.log"),
                                       candidates=backend_setup.base_python_candidates(sys.executable))
        tasks[SETUP] = task.start()
        _ensure_timer()
        self.report({"INFO"}, "Setting up the local backend in %s" % folder)
        return {"FINISHED"}


class GEN3D_OT_install_engine(bpy.types.Operator):
    bl_idname = "gen3d.install_engine"
    bl_label = "Install engine"
    bl_description = ("Install this engine's packages, native extensions and model weights into the local "
                      "backend's Python (large downloads)")

    engine: StringProperty(name="Engine", options={"HIDDEN"})

    @classmethod
    def poll(cls, context):
        return _gate(cls) and not _running(SETUP)

    def execute(self, context):
        if self.engine not in contract_request.SHAPE_ENGINES:
            self.report({"ERROR"}, "Unknown engine '%s'" % self.engine)
            return {"CANCELLED"}
        if _running(self.engine):
            return {"CANCELLED"}
        settings = _settings()
        result = checks.get(*_key(settings))
        if result is None or not result.ok:
            self.report({"ERROR"}, result.problem if result is not None else "Checking the Python first; try again.")
            start_check(settings)
            return {"CANCELLED"}
        log = os.path.join(os.path.dirname(env_dir()), "install-%s.log" % self.engine)
        tasks[self.engine] = EngineInstallTask(settings.python, self.engine, log, settings.backend_dir).start()
        _ensure_timer()
        return {"FINISHED"}


class GEN3D_OT_cancel_task(bpy.types.Operator):
    bl_idname = "gen3d.cancel_setup_task"
    bl_label = "Cancel"
    bl_description = "Stop this set-up or install (what is already installed stays; running it again continues)"

    name: StringProperty(options={"HIDDEN"})

    def execute(self, context):
        task = tasks.get(self.name)
        if task is not None and not task.finished:
            task.cancel()
        return {"FINISHED"}


class GEN3D_OT_check_python(bpy.types.Operator):
    bl_idname = "gen3d.check_python"
    bl_label = "Check again"
    bl_description = "Check again what the local backend's Python has (Gen3D, torch, CUDA, engines)"

    def execute(self, context):
        start_check()
        return {"FINISHED"}


class GEN3D_OT_choose_python(bpy.types.Operator):
    bl_idname = "gen3d.choose_python"
    bl_label = "Choose Python"
    bl_description = "Pick the Python executable of a Gen3D environment (hidden folders such as .venv are shown)"

    filepath: StringProperty(subtype="FILE_PATH")
    filter_glob: StringProperty(default="python*", options={"HIDDEN"})

    def invoke(self, context, event):
        paths = context.preferences.filepaths
        # The file browser hides dot folders (.venv) by default; show them while it is open.
        if hasattr(paths, "show_hidden_files_datablocks") and "hidden" not in _file_browser:
            _file_browser["hidden"] = paths.show_hidden_files_datablocks
            paths.show_hidden_files_datablocks = True
        current = _settings().python
        self.filepath = current if current and os.path.exists(current) else os.path.join(env_dir(), "")
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def _restore(self, context):
        if "hidden" in _file_browser:
            context.preferences.filepaths.show_hidden_files_datablocks = _file_browser.pop("hidden")

    def execute(self, context):
        self._restore(context)
        addon_prefs = prefs.get_prefs(context)
        if addon_prefs is not None:
            addon_prefs.python_path = self.filepath        # the update callback checks it
        return {"FINISHED"}

    def cancel(self, context):
        self._restore(context)


# drawing -----------------------------------------------------------------------------------------
def _wrapped(layout, text, icon="NONE"):
    for index, line in enumerate(textwrap.wrap(text, WRAP_CHARS) or [""]):
        layout.label(text=line, icon=icon if index == 0 else "BLANK1")


def _progress(layout, task, name):
    state = task.snapshot()
    row = layout.row(align=True)
    text = "%s (%d%%)" % (state["message"], round(100 * state["fraction"]))
    if hasattr(row, "progress"):                       # Blender 4.0+
        row.progress(factor=state["fraction"], type="BAR", text=text[:WRAP_CHARS])
    else:
        row.label(text=text[:WRAP_CHARS], icon="TIME")
    row.operator(GEN3D_OT_cancel_task.bl_idname, text="", icon="CANCEL").name = name


def _finished(layout, task):
    state = task.snapshot()
    if state["state"] == FAILED:
        _wrapped(layout, state["error"], icon="ERROR")
    elif state["state"] != DONE:
        layout.label(text="Cancelled. Press the button again to continue.", icon="INFO")
    layout.label(text="Log: %s" % state["log_path"])


def check_line(settings):
    """(icon, text) of the check line for the configured Python."""
    result = checks.get(*_key(settings))
    if checks.running(*_key(settings)):
        return "TIME", "Checking %s ..." % (settings.python or "the Python")
    if result is None:
        return "QUESTION", "Not checked yet"
    return ("CHECKMARK" if result.ok else "ERROR"), result.summary()


def draw_local(layout, addon_prefs):
    """The local backend's Python, its check line, the set-up button and the engines' install buttons."""
    settings = prefs.backend_settings(addon_prefs)
    row = layout.row(align=True)
    row.prop(addon_prefs, "python_path")
    row.operator(GEN3D_OT_choose_python.bl_idname, text="", icon="FILEBROWSER")
    if not addon_prefs.python_path and settings.python:
        layout.label(text="Using: %s" % settings.python, icon="INFO")
    if checks.get(*_key(settings)) is None and not checks.running(*_key(settings)) and not _running(SETUP):
        start_check(settings)
    icon, text = check_line(settings)
    row = layout.row()
    col = row.column()
    _wrapped(col, text, icon=icon)
    row.operator(GEN3D_OT_check_python.bl_idname, text="", icon="FILE_REFRESH")

    allowed, why = online_gate(prefs.online_access())
    box = layout.box()
    setup = tasks.get(SETUP)
    if setup is not None and not setup.finished:
        _progress(box, setup, SETUP)
    else:
        exists = os.path.isfile(backend_setup.venv_python(env_dir()))
        box.operator(GEN3D_OT_setup_backend.bl_idname, icon="CONSOLE",
                     text="Update local backend" if exists else "Set up local backend")
        box.label(text="Environment: %s" % env_dir())
        if setup is not None:
            _finished(box, setup)
    if not allowed:
        _wrapped(box, why, icon="INFO")

    result = checks.get(*_key(settings))
    if result is None or not result.ok:
        return
    col = layout.column(heading="Engines")
    for row_data in result.engines:
        name = row_data.get("name", "")
        task = tasks.get(name)
        row = col.row()
        if task is not None and not task.finished:
            row.label(text=name)
            _progress(row, task, name)
            continue
        if row_data.get("available"):
            row.label(text="%s: ready" % name, icon="CHECKMARK")
        else:
            row.label(text="%s: not available" % name, icon="DOT")
            sub = row.row()
            sub.enabled = allowed
            sub.operator(GEN3D_OT_install_engine.bl_idname, text="Install engine", icon="IMPORT").engine = name
            if row_data.get("reason"):
                _wrapped(col.box(), row_data["reason"])
        if task is not None and task.state != RUNNING:
            _finished(col, task)


def cancel_all():
    for task in tasks.values():
        if not task.finished:
            task.cancel()


classes = (GEN3D_OT_setup_backend, GEN3D_OT_install_engine, GEN3D_OT_cancel_task, GEN3D_OT_check_python,
           GEN3D_OT_choose_python)
