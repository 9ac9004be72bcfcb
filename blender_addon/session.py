"""The add-on's running state on Blender's main thread: the job manager, the timer that drains its
events, the job list in the scene, imports when jobs finish, and shutdown.

The timer is the only place job events are applied in the UI. It spends at most TICK_BUDGET_S per
call on events and comes back every TICK_INTERVAL_S while anything is active; imports run in their
own one-shot timer so a tick stays short.

Blender must not stall while a job runs. Writing a scene property from Python tags the scene for the
depsgraph and sends a window-wide redraw, 3D viewport included, so a job's row in the scene is
written when the job is queued and when it ends (and before the file is saved); the sidebar reads
a running job's status and progress from the Job objects. Redrawing the sidebar is itself costly
(measured under software GL: 250-480 ms a time for the sidebar, 10-30 ms for the status bar, the
add-on's own draw() about 1 ms), so the running percentage lives in the status bar, as Blender's own
jobs (render, bake) show theirs, redrawn at most REDRAW_INTERVAL_S apart when it changed; the sidebar
is redrawn only when a job's stage or status changes.
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
REDRAW_INTERVAL_S = 0.5
MESSAGE_LINES = 12

manager = None
previews = None                  # bpy.utils.previews collection for image-file thumbnails
_imports = []                    # job ids waiting for the import timer
# what the status bar and the sidebar last showed, and when each was redrawn
_redraw = {"shown": None, "at": 0.0, "stages": None, "stages_at": 0.0}


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
    bpy.app.handlers.save_pre.append(_before_save)
    atexit.register(_blender_exits)


def _blender_exits():
    stop(finish_running=True)


def stop(finish_running=False):
    """Cancel jobs and stop the worker (the add-on is disabled). When Blender exits (atexit),
    finish_running: the worker completes the job it holds and then exits, and the saved job list
    offers the result when the file is opened again (_after_load)."""
    global manager, previews
    atexit.unregister(_blender_exits)
    for handler, function in ((bpy.app.handlers.undo_post, _after_undo), (bpy.app.handlers.redo_post, _after_undo),
                              (bpy.app.handlers.load_post, _after_load), (bpy.app.handlers.save_pre, _before_save)):
        if function in handler:
            handler.remove(function)
    for timer in (tick, _run_imports, _watch_orphans):
        if bpy.app.timers.is_registered(timer):
            bpy.app.timers.unregister(timer)
    _imports.clear()
    running, manager = manager, None
    if not finish_running:
        redraw_status_bar()           # no jobs now: the status bar's text is cleared
    try:
        if running is not None:
            running.on_finished.clear()   # no imports while shutting down
            running.shutdown(finish_running=finish_running)
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
        manager.pump(TICK_BUDGET_S)
        _redraw_progress()
    except Exception:                 # Blender drops a timer that raises; the jobs would look stuck
        traceback.print_exc()
    return TICK_INTERVAL_S if manager.busy() else None


def _redraw_progress():
    """Redraw the status bar when the progress it shows changed, and the sidebar when a stage, status or
    message changed, each at most every REDRAW_INTERVAL_S."""
    active = [job for job in manager.jobs.values() if job.active]
    shown = tuple((job.job_id, job.status, job.stage, round(job.progress * 100)) for job in active)
    stages = tuple((job.job_id, job.status, job.stage, job.message) for job in active)
    now = time.monotonic()
    if shown != _redraw["shown"] and (now - _redraw["at"] >= REDRAW_INTERVAL_S or not active):
        _redraw.update(shown=shown, at=now)
        redraw_status_bar()
    if stages != _redraw["stages"] and now - _redraw["stages_at"] >= REDRAW_INTERVAL_S:
        _redraw.update(stages=stages, stages_at=now)
        redraw()


def active_jobs():
    """The running and queued jobs, for the status bar (a Job's progress is newer than its scene row)."""
    return [job for job in manager.jobs.values() if job.active] if manager is not None else []


def live_job(job_id):
    """The running Job behind a list row (its progress is newer than the row's), else None."""
    return manager.jobs.get(job_id) if manager is not None else None


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


def sync_job(job, force=False):
    """Mirror a job's state into its scene's list (called on every change, on the main thread).
    Only a new status is written (see the module docstring); force writes progress and message too."""
    scene = _scene_for(job)
    if scene is None:
        return
    item = find_item(scene, job.job_id)
    status = _row_status(job)
    if item is not None and job.active and not force:
        return                           # the sidebar reads a running job live (row_status)
    if item is None:
        item = scene.gen3d.jobs.add()
        item.job_id, item.name, item.folder = job.job_id, job.name, job.job_dir
        item.created = time.strftime("%Y-%m-%d %H:%M", time.localtime(job.created))
        scene.gen3d.job_index = len(scene.gen3d.jobs) - 1
    imported = job.data.get("object_name")
    _set(item, status=status, stage=job.stage, progress=job.progress,
         message=job.data.get("import_error") or job.message, object_name=imported or "",
         warning=job.data.get("warning") or "")


def row_status(item):
    """A row's status as the sidebar shows it: the live job's while it runs, else the saved one."""
    job = live_job(item.job_id)
    return _row_status(job) if job is not None else item.status


def _row_status(job):
    if job.status == COMPLETED and not job.data.get("object_name") and not job.data.get("import_error"):
        return "RUNNING"                 # the import still has to happen
    return FAILED if job.data.get("import_error") else job.status


def _set(block, **values):
    """Write only what differs: every write is a depsgraph tag and a window redraw."""
    for key, value in values.items():
        if getattr(block, key) != value:
            setattr(block, key, value)


@bpy.app.handlers.persistent
def _after_undo(*_args):
    # Undo restores the job list as it was in an older state; put the live jobs back.
    if manager is not None:
        for job in manager.jobs.values():
            sync_job(job)


@bpy.app.handlers.persistent
def _before_save(*_args):
    # The saved job list carries each running job's latest progress.
    if manager is not None:
        for job in manager.jobs.values():
            sync_job(job, force=True)


ORPHAN_POLL_S = 2.0
BACKGROUND_MESSAGE = "finishing in the background (Blender was closed during the job)"


def _orphan_state(item):
    """What became of a row saved while its job ran in a Blender session that is gone:
    COMPLETED (its result is there), RUNNING (its worker is still finishing it) or CANCELLED."""
    import glob
    import os
    folder = bpy.path.abspath(item.folder)
    if os.path.isfile(os.path.join(folder, "meta.json")):
        return "COMPLETED"
    staging = os.path.join(os.path.dirname(folder), ".%s.partial-%s" % (os.path.basename(folder), item.job_id))
    return "RUNNING" if glob.glob(glob.escape(staging)) else "CANCELLED"


def _settle_orphans():
    """Update rows of jobs that run on without a Blender session; True while any still runs."""
    known = manager.jobs if manager is not None else {}
    running = False
    for scene in bpy.data.scenes:
        if not hasattr(scene, "gen3d"):
            continue
        for item in scene.gen3d.jobs:
            if item.status not in ACTIVE or item.job_id in known:
                continue
            state = _orphan_state(item)
            if state == "COMPLETED":
                _set(item, status="COMPLETED", progress=1.0, message="finished after Blender closed: Import it")
            elif state == "RUNNING":
                _set(item, message=BACKGROUND_MESSAGE)
                running = True
            else:
                _set(item, status="CANCELLED", message="interrupted: Blender closed before it finished")
    return running


def _watch_orphans():
    if manager is None:
        return None
    try:
        running = _settle_orphans()
    except Exception:                 # a timer that raises is dropped silently
        traceback.print_exc()
        return None
    if not running:
        redraw()
    return ORPHAN_POLL_S if running else None


@bpy.app.handlers.persistent
def _after_load(*_args):
    """Rows saved while a job ran belong to a Blender session that is gone: say what became of them,
    and keep watching the ones whose worker is still finishing them."""
    if _settle_orphans() and not bpy.app.timers.is_registered(_watch_orphans):
        bpy.app.timers.register(_watch_orphans, first_interval=ORPHAN_POLL_S, persistent=True)
    if manager is not None:
        for job in manager.jobs.values():
            if job.active:
                sync_job(job)


def show_message(scene, text, error=False, source="", warning=False):
    """The panel's message box; `source` says what it is about so it can be cleared when that goes
    away ("generate", "import", "job:<id>"; see props.GEN3D_PG_scene.message_source)."""
    _set(scene.gen3d, message=text, message_is_error=error, message_is_warning=warning, message_source=source)
    redraw()


def clear_message(scene, source):
    if scene.gen3d.message and scene.gen3d.message_source == source:
        _set(scene.gen3d, message="", message_source="")


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
        show_message(scene, text, error=True, source="job:" + job.job_id)
        report(text, "ERROR")
    else:
        show_message(scene, "Gen3D: %s cancelled." % job.name, source="job:" + job.job_id)


def _run_imports():
    while _imports:
        job_id = _imports.pop(0)
        job = manager.jobs.get(job_id) if manager else None
        if job is not None and job.data.get("texture_target"):     # "Texture selected object": onto that object
            call_operator(bpy.ops.gen3d.apply_texture, job_id=job_id)
        else:
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
    """Redraw the Gen3D sidebar (the UI region of every 3D view) and the preferences, nothing else:
    area.tag_redraw() would redraw the viewport too."""
    wm = bpy.context.window_manager
    if wm is None:
        return
    for window in wm.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                for region in area.regions:
                    if region.type == "UI":
                        region.tag_redraw()
            elif area.type == "PREFERENCES":
                area.tag_redraw()


def redraw_status_bar():
    """The running jobs' percentage as the status bar's text, where modal tools put theirs (only that
    area is redrawn); cleared when nothing runs. Timers have no window in their context, hence the
    override."""
    wm = bpy.context.window_manager
    if wm is None or bpy.app.background:
        return
    text = "   ".join("Gen3D %s: %s %d%%" % (job.name, "queued" if job.status == "QUEUED" else (job.stage or "starting"),
                                           round(job.progress * 100)) for job in active_jobs()) or None
    if text == _redraw.get("status_text"):
        return
    _redraw["status_text"] = text
    for window in wm.windows:
        try:
            with bpy.context.temp_override(window=window):
                window.workspace.status_text_set(text)
        except (AttributeError, RuntimeError, TypeError):
            pass                      # a window closing; the next change sets it again


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


def start_failure_text(exc):
    """The message for an exception raised while starting a job (Generate, Texture Selected): an expected
    error in plain words, anything else as a bug with its traceback on the console. Call it in the except
    block. Both operators report a failed start with it, so they say the same."""
    if isinstance(exc, (Gen3DError, OSError)):
        return "Gen3D: %s" % error_text(exc)
    traceback.print_exc(file=sys.stderr)
    return "Gen3D: unexpected error (%s: %s); see the system console." % (type(exc).__name__, exc)
