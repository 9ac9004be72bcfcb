"""The 3D viewport sidebar tab "Gen3D": image, engine, quality, Generate, progress, job list."""

import os
import textwrap

import bpy

from . import engine_status, session
from .contract import request as contract_request
from .prefs import backend_settings, get_prefs
from .props import JOB_STATUSES, STATUS_ICONS
from .quality import engine_label, uses_sampler

STATUS_NAMES = {identifier: name for identifier, name, _desc, _icon, _n in JOB_STATUSES}

WRAP_CHARS = 48


def _file_icon(path):
    """Thumbnail icon of an image file (via a previews collection, so no datablock is created)."""
    if session.previews is None or not path or not os.path.isfile(path):
        return 0
    try:
        preview = session.previews.get(path) or session.previews.load(path, path, "IMAGE")
        return preview.icon_id
    except (KeyError, RuntimeError):
        return 0


def _image_icon(image):
    if image is None or image.preview is None:
        return 0
    return image.preview.icon_id


def live_state(item):
    """(stage, progress, message) of a row: from the running Job (the row is written only when the
    status changes, see session.py), else as saved."""
    job = session.live_job(item.job_id)
    if job is not None:
        return job.stage, job.progress, job.message
    return item.stage, item.progress, item.message


def draw_progress(layout, factor, text):
    if hasattr(layout, "progress"):                     # Blender 4.0+
        layout.progress(factor=factor, type="BAR", text=text)
    else:                                               # older: no progress widget; a slider would need
        layout.label(text=text, icon="TIME")            # a scene property written on every step


def draw_engine_status(layout, context, name):
    """Under an engine menu: whether the local backend can run that engine here, and why not: checked in
    the background the first time the panel shows, again with the refresh button, and updated by every
    worker's ready event. Remote endpoints decide for themselves."""
    settings = backend_settings(get_prefs(context))
    if settings.backend != "LOCAL":
        return
    if not engine_status.status.checked(settings) and not engine_status.status.checking(settings):
        engine_status.status.refresh(settings)
        session.redraw_until(lambda: not engine_status.status.checking(settings))
    available, text = engine_status.status.describe(settings, name)
    text = text.replace(name, engine_label(name), 1) if text.startswith(name + " ") else text
    icon = {True: "CHECKMARK", False: "ERROR", None: "TIME"}[available]
    lines = textwrap.wrap(text, WRAP_CHARS) or [""]
    column = layout.column(align=True)
    for index, line in enumerate(lines[:6]):
        row = column.row()
        row.scale_y = 0.7
        if index == 0:
            row.label(text=line, icon=icon)
            row.operator("gen3d.check_engines", text="", icon="FILE_REFRESH", emboss=False)
        else:
            row.label(text=line)
    memory = engine_status.status.memory_lines(settings, name)
    if memory:                                  # what a smaller GPU does with this engine's models
        row = column.row()
        row.scale_y = 0.7
        row.label(text="GPU memory:", icon="MEMORY")
        for line in memory:
            for index, piece in enumerate(textwrap.wrap(line, WRAP_CHARS - 2)[:2]):
                row = column.row()
                row.scale_y = 0.7
                row.label(text=("  " if index else "") + piece)


def draw_lines(layout, text, limit=4):
    """Text wrapped to the sidebar's width, so nothing is cut off at its edge."""
    column = layout.column(align=True)
    for line in (textwrap.wrap(text or "", WRAP_CHARS) or [])[:limit]:
        row = column.row()
        row.scale_y = 0.7
        row.label(text=line)


def job_summary(item):
    """'Done: cone', 'Cancelled during shape', 'Failed: <why>' - without saying the status twice."""
    status = session.row_status(item)
    status = STATUS_NAMES.get(status, status.capitalize())
    detail = item.object_name or live_state(item)[2] or item.stage
    if getattr(item, "warning", "") and status == STATUS_NAMES.get("COMPLETED"):
        # the result may be wrong (an unsure cut-out): the row says so, the message box says why
        first = item.warning.split(". ")[0]
        detail = "%s - warning: %s" % (detail, first) if detail else "warning: %s" % first
    if not detail or detail.lower() == status.lower():
        return status
    return "%s %s" % (status, detail) if detail.startswith("during ") else "%s: %s" % (status, detail)


def draw_message(layout, text, error, warning=False):
    box = layout.box()
    lines = [piece for paragraph in text.splitlines() for piece in (textwrap.wrap(paragraph, WRAP_CHARS) or [""])]
    for index, line in enumerate(lines[:session.MESSAGE_LINES]):
        row = box.row()
        row.scale_y = 0.7
        if index == 0:
            row.label(text=line, icon="ERROR" if error or warning else "INFO")
            row.operator("gen3d.clear_message", text="", icon="X", emboss=False)
        else:
            row.label(text=line)
    if len(lines) > session.MESSAGE_LINES:
        box.label(text="... (see the system console or worker.log)")


class GEN3D_PT_main(bpy.types.Panel):
    bl_idname = "GEN3D_PT_main"
    bl_label = "Gen3D"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Gen3D"

    def draw(self, context):
        layout = self.layout
        props = context.scene.gen3d
        layout.row().prop(props, "source", expand=True)
        if props.source == "FILE":
            layout.prop(props, "filepath", text="")
            icon = _file_icon(bpy.path.abspath(props.filepath))
        else:
            layout.template_ID(props, "image", open="image.open")
            icon = _image_icon(props.image)
        if icon:
            layout.template_icon(icon_value=icon, scale=6.0)
        views = layout.column(align=True)     # optional extra views, empty by default
        for name in ("view_right", "view_back", "view_left"):
            views.prop(props, name)
        layout.prop(props, "engine")
        draw_engine_status(layout, context, props.engine)
        layout.row().prop(props, "preset", expand=True)
        row = layout.row()
        row.scale_y = 1.5
        row.enabled = bool(props.filepath if props.source == "FILE" else props.image)
        row.operator("gen3d.generate", icon="MESH_MONKEY")
        layout.operator("gen3d.texture_selected", icon="TEXTURE")    # paints the active mesh object instead

        for item in props.jobs:
            status = session.row_status(item)
            if status in ("QUEUED", "RUNNING"):
                box = layout.box()
                row = box.row()
                row.label(text=item.name, icon=STATUS_ICONS[status])
                row.operator("gen3d.cancel", text="", icon="CANCEL").job_id = item.job_id
                stage, progress, message = live_state(item)
                stage = "queued" if status == "QUEUED" else (stage or "starting")
                draw_progress(box, progress, "%s %d%%" % (stage, round(progress * 100)))
                draw_lines(box, message)         # e.g. the remote endpoint cannot be reached, retrying
        if props.message:
            draw_message(layout, props.message, props.message_is_error, props.message_is_warning)

        prefs = get_prefs(context)
        settings = backend_settings(prefs)
        status = session.client_status(settings) if settings.backend == "LOCAL" else settings.remote_url
        row = layout.row()
        row.scale_y = 0.7
        row.label(text="%s backend%s" % (settings.backend.capitalize(), (": " + status) if status else ""))


class GEN3D_PT_advanced(bpy.types.Panel):
    bl_idname = "GEN3D_PT_advanced"
    bl_label = "Advanced"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Gen3D"
    bl_parent_id = "GEN3D_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.gen3d
        layout.prop(props, "texture_engine")
        if props.texture_engine in contract_request.TEXTURE_ENGINES:
            draw_engine_status(layout, context, props.texture_engine)
        layout.prop(props, "remove_background")
        layout.prop(props, "texture")
        layout.prop(props, "face_count")
        sub = layout.column()
        sub.enabled = props.texture
        sub.prop(props, "texture_size")
        layout.prop(props, "octree_resolution")
        painter = props.texture_engine if props.texture_engine in contract_request.TEXTURE_ENGINES else (
            props.engine if props.engine in contract_request.TEXTURE_ENGINES else "builtin")
        if uses_sampler(props.engine) or (props.texture and uses_sampler(painter)):
            row = layout.row()                              # the built-in engine has no sampler to steer
            row.prop(props, "engine_steps")
            steps = row.row()
            steps.enabled = not props.engine_steps
            steps.prop(props, "num_inference_steps")
            layout.prop(props, "guidance_scale")
        layout.prop(props, "seed")


class GEN3D_UL_jobs(bpy.types.UIList):
    bl_idname = "GEN3D_UL_jobs"

    def draw_item(self, _context, layout, _data, item, _icon, _active_data, _active_prop, _index=0, _flt_flag=0):
        row = layout.row(align=True)
        status = session.row_status(item)
        row.label(text=item.name, icon=STATUS_ICONS.get(status, "QUESTION"))
        if status in ("QUEUED", "RUNNING"):
            row.label(text="%d%%" % round(live_state(item)[1] * 100))
        else:
            row.label(text=item.created)


class GEN3D_PT_jobs(bpy.types.Panel):
    bl_idname = "GEN3D_PT_jobs"
    bl_label = "Jobs"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Gen3D"
    bl_parent_id = "GEN3D_PT_main"

    def draw(self, context):
        layout = self.layout
        props = context.scene.gen3d
        layout.template_list("GEN3D_UL_jobs", "", props, "jobs", props, "job_index", rows=3)
        if 0 <= props.job_index < len(props.jobs):
            item = props.jobs[props.job_index]
            col = layout.column(align=True)
            for line in textwrap.wrap(job_summary(item), WRAP_CHARS)[:6]:
                col.label(text=line)
            row = layout.row(align=True)
            status = session.row_status(item)
            if status in ("QUEUED", "RUNNING"):
                row.operator("gen3d.cancel", icon="CANCEL").job_id = item.job_id
            elif status == "COMPLETED":               # failed and cancelled jobs have nothing to import
                text = "Re-import" if item.object_name else "Import"
                row.operator("gen3d.import_result", text=text, icon="IMPORT").job_id = item.job_id
            row.operator("gen3d.open_folder", text="", icon="FILE_FOLDER").job_id = item.job_id
            row.operator("gen3d.remove_job", text="", icon="X").job_id = item.job_id
        layout.operator("gen3d.import_result", text="Import Result Folder...", icon="FILEBROWSER")


classes = (GEN3D_PT_main, GEN3D_PT_advanced, GEN3D_UL_jobs, GEN3D_PT_jobs)

