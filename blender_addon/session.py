"""The add-on's running state on Blender's main thread: the job manager, the timer that drains its
events, the job list in the scene, imports when jobs finish, and shutdown.

The timer is the only place job events are applied in the UI. It spends at most TICK_BUDGET_S per
call on events and comes back every TICK_INTERVAL_S while anything is active; imports run in their
own one-shot timer so a tick stays short.
"""

import atexit
import sys
import time
import traceback

import bpy

from .contract import Gen3DError
from .jobs import ACTIVE, COMPLETED, FAILED, JobManager

TICK_INTERVAL_S = 0.1
TICK_BUDGET_S = 0.004
MESSAGE_LINES = 12

manager = None
previews = None                  # bpy.utils.previews collection for image-file thumbnails
_imports = []                    # job ids waiting for the import timer


# lifecycle ------------------------------------------------------------------------------------------
def start():
    global manager, previews
    manager = JobManager()
    manager.on_change.append(sync_job)
    manager.on_finished.append(_job_finished)
    import bpy.utils.previews
    previews = bpy.utils.previews.new()
    for handler in (bpy.app.handlers.undo_post, bpy.app.handlers.redo_post):
        handler.append(_after_undo)
    bpy.app.handlers.load_post.append(_after_load)
    atexit.register(stop)


def stop():
    """Cancel jobs and stop the worker. Runs on unregister and (through atexit) when Blender exits."""
    global manager, previews
    atexit.unregister(stop)
    for handler, function in ((bpy.app.handlers.undo_post, _after_undo), (bpy.app.handlers.redo_post, _after_undo),
                              (bpy.app.handlers.load_post, _after_load)):
        if function in handler:
            handler.remove(function)
    for timer in (tick, _run_imports):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    _imports.clear()
    running, manager = manager, None
    try:
        if running is not None:
            running.on_finished.clear()   # no imports while shutting down
            running.shutdown()
    finally:
        if previews is not None:
            bpy.utils.previews.remove(previews)
            previews = None


# submitting -----------------------------------------------------------------------------------------
def submit(context, name, image_path, request, settings, import_options):
    """Queue a job from the UI; raises Gen3DError (nothing queued, scene untouched) when it cannot start."""
    job = manager.submit(name, image_path, request, settings)
    job.data.update(scene=context.scene.name, import_options=import_options,
                    location=tuple(context.scene.cursor.location))
    ensure_timer()
    return job


def ensure_timer():
    if not bpy.app.timers.is_registered(tick):
        bpy.app.timers.register(tick, first_interval=0.0, persistent=True)


def tick():
    """bpy.app.timers callback: apply job events within the budget; None unregisters it when idle."""
    if manager is None:
        return None
    try:
        if manager.pump(TICK_BUDGET_S):
            redraw()
    except Exception:                 # Blender drops a timer that raises; the jobs would look stuck
        traceback.print_exc()
    return TICK_INTERVAL_S if manager.busy() else None


def client_status(settings):
    client = manager.existing_client(settings) if manager is not None else None
    return client.status() if client is not None else ""


# the scene's job list ------------------------------------------------------------------------------
def _scene_for(job):
    return bpy.data.scenes.get(job.data.get("scene", "")) or bpy.context.scene


def find_item(scene, job_id):
    for item in scene.gen3d.jobs:
        if item.job_id == job_id:
            return item
    return None


def sync_job(job):
    """Mirror a job's state into its scene's list (called on every change, on the main thread)."""
    scene = _scene_for(job)
    if scene is None:
        return
    item = find_item(scene, job.job_id)
    if item is None:
        item = scene.gen3d.jobs.add()
        item.job_id, item.name, item.folder = job.job_id, job.name, job.job_dir
        item.created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created))
        scene.gen3d.job_index = len(scene.gen3d.jobs) - 1
    imported = job.data.get("object_name")
    if job.status == COMPLETED and not imported and not job.data.get("import_error"):
        item.status = "RUNNING"          # the import still has to happen
    else:
        item.status = FAILED if job.data.get("import_error") else job.status
    item.stage, item.progress = job.stage, job.progress
    item.message = job.data.get("import_error") or job.message
    item.object_name = imported or ""


@bpy.app.handlers.persistent
def _after_undo(*_args):
    # Undo restores the job list as it was in an older state; put the live jobs back.
    if manager is not None:
        for job in manager.jobs.values():
            sync_job(job)


@bpy.app.handlers.persistent
def _after_load(*_args):
    """Rows saved while a job ran belong to a Blender session that is gone: say what became of them."""
    import os
    known = manager.jobs if manager is not None else {}
    for scene in bpy.data.scenes:
        if not hasattr(scene, "gen3d"):
            continue
        for item in scene.gen3d.jobs:
            if item.status in ACTIVE and item.job_id not in known:
                if os.path.isfile(os.path.join(item.folder, "meta.json")):
                    item.status, item.progress = "COMPLETED", 1.0
                    item.message = "finished after Blender closed; use Re-import"
                else:
                    item.status, item.message = "CANCELLED", "interrupted: Blender closed before it finished"
    if manager is not None:
        for job in manager.jobs.values():
            if job.active:
                sync_job(job)


def show_message(scene, text, error=False):
    scene.gen3d.message = text
    scene.gen3d.message_is_error = error
    redraw()


# finishing -----------------------------------------------------------------------------------------
def _job_finished(job):
    if job.status == COMPLETED:
        _imports.append(job.job_id)
        if not bpy.app.timers.is_registered(_run_imports):
            bpy.app.timers.register(_run_imports, first_interval=0.0, persistent=True)
        return
    scene = _scene_for(job)
    if job.status == FAILED:
        text = "Gen3D: %s failed: %s" % (job.name, job.message)
        print(text, file=sys.stderr)
        show_message(scene, text, error=True)
        report(text, "ERROR")
    else:
        show_message(scene, "Gen3D: %s cancelled." % job.name)


def _run_imports():
    while _imports:
        job_id = _imports.pop(0)
        call_operator(bpy.ops.gen3d.import_result, job_id=job_id, on_completion=True)
    return None


def call_operator(operator, **kwargs):
    """Run an operator from a timer, where there may be no window in the context; one undo step.
    Errors the operator reports are already shown; they must not escape into the timer."""
    window = bpy.context.window
    if window is None and bpy.context.window_manager is not None and bpy.context.window_manager.windows:
        window = bpy.context.window_manager.windows[0]
    try:
        if window is None:
            return operator("EXEC_DEFAULT", True, **kwargs)
        with bpy.context.temp_override(window=window, screen=window.screen):
            return operator("EXEC_DEFAULT", True, **kwargs)
    except RuntimeError as exc:       # raised for reports of type ERROR when called from Python
        print("Gen3D: %s" % exc, file=sys.stderr)
        return {"CANCELLED"}


def report(text, level="INFO"):
    """A status-bar report from outside an operator (timers)."""
    call_operator(bpy.ops.gen3d.report, message=text, level=level)


def redraw():
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def redraw_until(done, interval=0.5):
    """Redraw the sidebar every `interval` seconds until done() is true (a background check finishing
    must show up without the artist moving the mouse). Nothing to redraw without a UI; and a timer
    left pending there keeps the bpy module from exiting."""
    if bpy.app.background:
        return

    def poll():
        redraw()
        return None if done() else interval

    bpy.app.timers.register(poll, first_interval=interval)


def error_text(exc):
    return exc.message if isinstance(exc, Gen3DError) else str(exc)
