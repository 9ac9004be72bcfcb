"""Operators: generate, cancel, import a result (one undo step), open a job folder, list upkeep.

Every failure is reported as a plain message (status bar and panel) and returns CANCELLED, so no
traceback dialog appears and, with nothing changed, no undo step is pushed.
"""

import os
import shutil
import sys

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

from . import engine_status, images, session
from .contract import Gen3DError
from .importer import import_result, name_from_folder, result_folder, warm_up
from .prefs import backend_settings, get_prefs, import_settings
from .props import request_fields


def fail(operator, context, text, source="generate"):
    session.show_message(context.scene, text, error=True, source=source)
    operator.report({"ERROR"}, text)
    return {"CANCELLED"}


def start_generation(operator, context, filepath=""):
    """Generate from the sidebar's image, or from `filepath` when given (drag and drop)."""
    props = context.scene.gen3d
    prefs = get_prefs(context)
    settings = backend_settings(prefs)
    try:
        path, name = images.chosen_source(props, settings.output_dir, filepath)
        job = session.submit(context, name, path, request_fields(props), settings, import_settings(prefs))
    except Exception as exc:          # expected errors and bugs alike (a bug: traceback on the console)
        return fail(operator, context, session.start_failure_text(exc))
    session.show_message(context.scene, "Generating %s (%s backend)." % (name, settings.backend.lower()),
                         source="job:" + job.job_id)
    operator.report({"INFO"}, "Gen3D: generating %s" % name)
    session.sync_job(job)
    warm_up()
    return {"FINISHED"}


class GEN3D_OT_generate(bpy.types.Operator):
    """Generate a textured 3D object from the chosen image"""

    bl_idname = "gen3d.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"},
                             description="Image file to use instead of the sidebar's choice")

    def execute(self, context):
        return start_generation(self, context, self.filepath)


class GEN3D_OT_generate_dropped(bpy.types.Operator):
    """Generate a 3D object from an image file dropped on the viewport"""

    bl_idname = "gen3d.generate_dropped"
    bl_label = "Generate 3D Object"
    bl_options = {"REGISTER", "INTERNAL"}

    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"})

    def invoke(self, context, _event):
        if not self.filepath:
            return {"CANCELLED"}
        return context.window_manager.invoke_props_dialog(self)

    def draw(self, _context):
        self.layout.label(text="Generate a 3D object from %s?" % os.path.basename(self.filepath), icon="IMAGE_DATA")

    def execute(self, context):
        props = context.scene.gen3d
        result = start_generation(self, context, self.filepath)
        if "FINISHED" in result:          # remember the file for the next Generate
            props.source, props.filepath = "FILE", self.filepath
        return result


class GEN3D_OT_cancel(bpy.types.Operator):
    """Cancel this job (the backend stops it within 2 seconds)"""

    bl_idname = "gen3d.cancel"
    bl_label = "Cancel"
    bl_options = {"REGISTER", "INTERNAL"}

    job_id: StringProperty()

    def execute(self, context):
        if session.manager is None or not session.manager.cancel(self.job_id):
            self.report({"WARNING"}, "Gen3D: that job is not running any more")
            return {"CANCELLED"}
        session.ensure_timer()
        return {"FINISHED"}


class GEN3D_OT_import_result(bpy.types.Operator):
    """Import a Gen3D result (a job folder or its meta.json) with its PBR material"""

    bl_idname = "gen3d.import_result"
    bl_label = "Import Gen3D Result"
    bl_options = {"REGISTER", "UNDO"}

    # Hidden from the F9 redo panel: raw paths and ids are not something to edit there.
    filepath: StringProperty(subtype="FILE_PATH", options={"SKIP_SAVE", "HIDDEN"})
    job_id: StringProperty(options={"SKIP_SAVE", "HIDDEN"})
    # Set when a job has just finished: import with the options and cursor of when it was started.
    # Otherwise (Re-import) the current preferences and cursor apply.
    on_completion: BoolProperty(options={"SKIP_SAVE", "HIDDEN"})
    filter_glob: StringProperty(default="*.json", options={"HIDDEN"})

    def invoke(self, context, _event):
        if self.filepath or self.job_id:
            return self.execute(context)
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        prefs = get_prefs(context)
        job = session.manager.jobs.get(self.job_id) if (session.manager and self.job_id) else None
        item = session.find_item(context.scene, self.job_id) if self.job_id else None
        if job is not None:
            folder, name, options, location = job.job_dir, job.name, None, None
            if self.on_completion:
                options, location = job.data.get("import_options"), job.data.get("location")
        elif item is not None:
            folder, name, options, location = item.folder, item.name, None, None
        elif self.filepath:
            folder = result_folder(self.filepath)
            name, options, location = name_from_folder(folder), None, None
        else:
            return fail(self, context, "Gen3D: choose a job folder or its meta.json to import.")
        options = options or import_settings(prefs)
        try:
            obj = import_result(context, folder, name=name, options=options,
                                location=location if options.place_at_cursor else None)
        except Gen3DError as exc:
            if job is not None and self.on_completion:
                job.data["import_error"] = "Import failed: %s" % exc.message
                session.sync_job(job)
            return fail(self, context, "Gen3D: %s" % exc.message, source="import")
        warning = obj.get("gen3d_warning") or ""
        if job is not None:
            job.data["object_name"] = obj.name
            job.data["warning"] = warning
            session.sync_job(job)
        elif item is not None:
            item.status, item.object_name, item.message = "COMPLETED", obj.name, "re-imported"
            item.warning = warning
        if warning:
            # exit 0 with a doubtful cut-out must not look like a clean success
            text = "Imported %s. Warning: %s" % (obj.name, warning)
            session.show_message(context.scene, text, source="import", warning=True)
            print("Gen3D: " + text, file=sys.stderr)
            self.report({"WARNING"}, "Gen3D: " + text)
        else:
            session.show_message(context.scene, "Imported %s." % obj.name, source="import")
            self.report({"INFO"}, "Gen3D: imported %s" % obj.name)
        return {"FINISHED"}


def _item_folder(context, job_id):
    item = session.find_item(context.scene, job_id)
    return item.folder if item is not None else ""


class GEN3D_OT_open_folder(bpy.types.Operator):
    """Open the job's folder in the system file browser"""

    bl_idname = "gen3d.open_folder"
    bl_label = "Open Folder"
    bl_options = {"REGISTER", "INTERNAL"}

    job_id: StringProperty()
    path: StringProperty(subtype="DIR_PATH", options={"SKIP_SAVE"})

    def execute(self, context):
        folder = self.path or _item_folder(context, self.job_id)
        if not folder or not os.path.isdir(folder):
            # An unfinished or failed job has no folder yet: show the output folder instead.
            parent = os.path.dirname(folder.rstrip("/\\")) if folder else ""
            if not parent or not os.path.isdir(parent):
                return fail(self, context, "Gen3D: the folder %s does not exist (any more)." % (folder or "?"))
            folder = parent
        if sys.platform.startswith("linux") and not shutil.which("xdg-open"):
            # Blender's path_open needs xdg-open here and does nothing without it.
            return fail(self, context, "Gen3D: no program to open folders was found (xdg-open; Debian/Ubuntu: "
                        "sudo apt-get install xdg-utils). The folder is %s" % folder, source="folder")
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


class GEN3D_OT_remove_job(bpy.types.Operator):
    """Remove the job from this list (its files stay in the output folder)"""

    bl_idname = "gen3d.remove_job"
    bl_label = "Remove from List"
    bl_options = {"REGISTER", "INTERNAL"}

    job_id: StringProperty()

    def execute(self, context):
        jobs = context.scene.gen3d.jobs
        for index, item in enumerate(jobs):
            if item.job_id == self.job_id:
                if item.status in ("QUEUED", "RUNNING") and session.manager is not None:
                    session.manager.cancel(self.job_id)
                jobs.remove(index)
                session.clear_message(context.scene, "job:" + self.job_id)
                context.scene.gen3d.job_index = min(context.scene.gen3d.job_index, len(jobs) - 1)
                return {"FINISHED"}
        return {"CANCELLED"}


class GEN3D_OT_check_engines(bpy.types.Operator):
    """Check again which engines the local backend can run (in the background)"""

    bl_idname = "gen3d.check_engines"
    bl_label = "Check Engines"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context):
        settings = backend_settings(get_prefs(context))
        engine_status.status.refresh(settings)
        session.redraw_until(lambda: not engine_status.status.checking(settings))
        return {"FINISHED"}


class GEN3D_OT_stop_worker(bpy.types.Operator):
    """Stop the local worker process when no job needs it (frees its memory; it starts again on the next job)"""

    bl_idname = "gen3d.stop_worker"
    bl_label = "Stop Worker"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, _context):
        if session.manager is not None:
            session.manager.close_idle_clients()
        return {"FINISHED"}


class GEN3D_OT_clear_message(bpy.types.Operator):
    """Hide this message"""

    bl_idname = "gen3d.clear_message"
    bl_label = "Dismiss"
    bl_options = {"REGISTER", "INTERNAL"}

    def execute(self, context):
        context.scene.gen3d.message = context.scene.gen3d.message_source = ""
        return {"FINISHED"}


class GEN3D_OT_report(bpy.types.Operator):
    """Show a Gen3D message in the status bar"""

    bl_idname = "gen3d.report"
    bl_label = "Gen3D Report"
    bl_options = {"INTERNAL"}

    message: StringProperty()
    level: EnumProperty(items=[("INFO", "Info", ""), ("WARNING", "Warning", ""), ("ERROR", "Error", "")])

    def execute(self, _context):
        self.report({self.level}, self.message)
        return {"FINISHED"}


classes = (GEN3D_OT_generate, GEN3D_OT_generate_dropped, GEN3D_OT_cancel, GEN3D_OT_import_result,
           GEN3D_OT_open_folder, GEN3D_OT_remove_job, GEN3D_OT_check_engines, GEN3D_OT_stop_worker,
           GEN3D_OT_clear_message, GEN3D_OT_report)
