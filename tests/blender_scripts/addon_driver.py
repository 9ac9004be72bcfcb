"""Runs inside Blender (the bpy module, or `blender -b -P`) for tests/test_addon_*.py.

    python addon_driver.py SCENARIO CONFIG.json REPORT.json
    blender -b --factory-startup -P addon_driver.py -- SCENARIO CONFIG.json REPORT.json

Each scenario drives the installed add-on the way a user would (operators, preferences) and writes
what it observed to REPORT.json; the pytest side makes the assertions. Background Blender runs no
timers, so `pump` calls the add-on's timer callbacks itself, exactly as Blender would.
"""

import json
import os
import signal
import sys
import time
import traceback

import bpy
import mathutils
import addon_utils  # noqa: E402  (importable once bpy is: the bpy module sets up Blender's script paths)

ADDON_ID = "gen3d"


def script_args():
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else sys.argv[1:]


# add-on handling ----------------------------------------------------------------------------------
def _raise(exc):
    raise exc


def install(kind, zip_path):
    """Install and enable the built zip; returns the add-on's module name."""
    if kind == "legacy":
        result = bpy.ops.preferences.addon_install(filepath=zip_path, overwrite=True)
        assert result == {"FINISHED"}, result
        addon_utils.enable(ADDON_ID, default_set=True, handle_error=_raise)
        module = ADDON_ID
    elif kind == "extension":
        result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default",
                                                          enable_on_install=True)
        assert result == {"FINISHED"}, result
        module = "bl_ext.user_default." + ADDON_ID
    else:
        raise ValueError(kind)
    assert module in bpy.context.preferences.addons, list(bpy.context.preferences.addons.keys())
    return module


def submodule(module, name):
    return sys.modules[module + "." + name]


def registered():
    """What the add-on has put into Blender right now."""
    ops = dir(bpy.ops.gen3d) if hasattr(bpy.ops, "gen3d") else []
    callable_ops = []
    for name in ops:
        try:
            getattr(bpy.ops.gen3d, name).get_rna_type()
            callable_ops.append(name)
        except (KeyError, AttributeError, RuntimeError):
            pass
    return {
        "types": sorted(name for name in dir(bpy.types) if name.startswith("GEN3D_")),
        "operators": sorted(callable_ops),
        "scene_property": hasattr(bpy.types.Scene, "gen3d"),
    }


def configure(module, config, **overrides):
    prefs = bpy.context.preferences.addons[module].preferences
    values = dict(config.get("prefs", {}), **overrides)
    for key, value in values.items():
        setattr(prefs, key, value)
    return prefs


def set_request(scene, config):
    props = scene.gen3d
    for key, value in config.get("request", {}).items():
        setattr(props, key, str(value) if key == "texture_size" else value)


def scene_state():
    """Everything 'the scene is unchanged' is about."""
    return {
        "objects": sorted(o.name for o in bpy.data.objects),
        "meshes": len(bpy.data.meshes), "materials": len(bpy.data.materials), "images": len(bpy.data.images),
        "selected": sorted(o.name for o in bpy.context.view_layer.objects if o.select_get()),
    }


def pump(session, until, timeout, ticks=None):
    """Call the add-on's timers as Blender's event loop would, until `until()` or the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        started = time.perf_counter()
        session.tick()
        elapsed = time.perf_counter() - started
        if ticks is not None:
            ticks.append(elapsed)
        if session._imports:
            session._run_imports()
        if until():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def job_items(scene):
    return [{key: getattr(item, key) for key in ("job_id", "name", "status", "stage", "progress", "message",
                                                    "folder", "object_name")} for item in scene.gen3d.jobs]


def run_operator(operator, **kwargs):
    """(result, error text) - bpy.ops raises RuntimeError for reports of type ERROR."""
    try:
        return sorted(operator(**kwargs)), None
    except RuntimeError as exc:
        return ["CANCELLED"], str(exc)


def world_bounds(obj):
    corners = [obj.matrix_world @ mathutils.Vector(corner) for corner in obj.bound_box]
    return [[min(c[i] for c in corners) for i in range(3)], [max(c[i] for c in corners) for i in range(3)]]


def describe_object(obj):
    material = obj.data.materials[0] if obj.type == "MESH" and obj.data.materials else None
    return {
        "name": obj.name, "type": obj.type, "location": list(obj.location), "dimensions": list(obj.dimensions),
        "rotation_mode": obj.rotation_mode, "bounds": world_bounds(obj) if obj.type == "MESH" else None,
        "mesh_name": obj.data.name if obj.type == "MESH" else None,
        "scale": list(obj.scale), "materials": [m.name for m in obj.data.materials] if obj.type == "MESH" else [],
        "material": describe_material(material) if material else None,
        "uv_maps": [uv.name for uv in obj.data.uv_layers] if obj.type == "MESH" else [],
        "faces": len(obj.data.polygons) if obj.type == "MESH" else 0,
    }


def describe_material(material):
    nodes = {}
    for node in material.node_tree.nodes:
        entry = {"type": node.bl_idname}
        entry["location"] = list(node.location)
        if node.bl_idname == "ShaderNodeTexImage" and node.image is not None:
            entry.update(image=node.image.name, file=os.path.basename(node.image.filepath),
                         colorspace=node.image.colorspace_settings.name)
        if node.bl_idname == "ShaderNodeMix":
            entry.update(blend_type=node.blend_type, data_type=node.data_type)
        if node.bl_idname == "ShaderNodeMixRGB":
            entry.update(blend_type=node.blend_type)
        if node.bl_idname == "ShaderNodeNormalMap":
            entry.update(space=node.space, uv_map=node.uv_map)
        nodes[node.name] = entry
    links = [[link.from_node.name, link.from_socket.name, link.to_node.name, link.to_socket.name]
             for link in material.node_tree.links]
    return {"nodes": nodes, "links": links}


# drawing without a window ------------------------------------------------------------------------
class LayoutRecorder:
    """Stands in for UILayout in background mode: checks every property, operator and template the
    panels use against Blender's RNA (a typo raises) and records what was drawn."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        if not hasattr(bpy.types.UILayout, name) and name not in bpy.types.UILayout.bl_rna.functions:
            raise AttributeError("UILayout has no %r in Blender %s" % (name, bpy.app.version_string))
        if name in ("row", "column", "box", "split", "grid_flow", "column_flow"):
            return lambda *args, **kwargs: LayoutRecorder(self.log)
        return lambda *args, **kwargs: self.log.append([name, repr(args[1:2]), sorted(kwargs)])

    def __setattr__(self, name, value):
        if name != "log" and name not in bpy.types.UILayout.bl_rna.properties:
            raise AttributeError("UILayout has no property %r" % name)
        object.__setattr__(self, name, value)

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, "%s has no property %r" % (data, name)
        self.log.append(["prop", name, sorted(kwargs)])

    def operator(self, idname, **kwargs):
        module, name = idname.split(".")
        properties = getattr(getattr(bpy.ops, module), name).get_rna_type().properties
        self.log.append(["operator", idname, sorted(kwargs)])
        return OperatorProps(properties)

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, **kwargs):
        assert hasattr(bpy.types, list_type), list_type
        assert prop in data.bl_rna.properties and active_prop in active_data.bl_rna.properties
        self.log.append(["template_list", list_type, sorted(kwargs)])

    def template_ID(self, data, prop, **kwargs):
        assert prop in data.bl_rna.properties, prop
        self.log.append(["template_ID", prop, sorted(kwargs)])


class OperatorProps:
    def __init__(self, properties):
        object.__setattr__(self, "_properties", properties)

    def __setattr__(self, name, value):
        assert name in self._properties, "operator has no property %r" % name


def draw_everything(module):
    """Draw every panel, the job list rows and the preferences in the states users see; returns the log."""
    log = []
    scene = bpy.context.scene
    props = scene.gen3d
    image = bpy.data.images.new("drawn", 4, 4)
    running = props.jobs.add()
    running.job_id, running.name, running.status, running.stage, running.progress = "a" * 16, "cube", "RUNNING", \
        "shape", 0.3
    finished = props.jobs.add()
    finished.job_id, finished.name, finished.status, finished.object_name = "b" * 16, "cone", "COMPLETED", "cone"
    props.message, props.message_is_error = "Gen3D: a long error message " * 8 + "\nsecond line", True
    panels = [getattr(bpy.types, name) for name in ("GEN3D_PT_main", "GEN3D_PT_advanced", "GEN3D_PT_jobs")]
    for source, job_index, engine in (("FILE", 0, "builtin"), ("IMAGE", 1, "hunyuan3d-2.1")):
        props.source, props.image, props.filepath, props.job_index = source, image, "//missing.png", job_index
        props.engine = engine             # a model engine shows Steps and Guidance, the built-in one does not
        for panel in panels:
            panel.draw(LayoutHolder(log), bpy.context)
    ui_list = bpy.types.GEN3D_UL_jobs
    for item in props.jobs:
        ui_list.draw_item(None, bpy.context, LayoutRecorder(log), props, item, 0, props, "job_index", 0)
    prefs = bpy.context.preferences.addons[module].preferences
    for backend in ("LOCAL", "REMOTE"):
        prefs.backend = backend
        type(prefs).draw(PrefsHolder(prefs, log), bpy.context)
    prefs.backend = "LOCAL"
    props.engine = "builtin"
    props.jobs.clear()
    props.message = ""
    bpy.data.images.remove(image)
    return log


class LayoutHolder:
    def __init__(self, log):
        self.layout = LayoutRecorder(log)


class PrefsHolder(LayoutHolder):
    def __init__(self, prefs, log):
        super().__init__(log)
        self._prefs = prefs

    def __getattr__(self, name):
        return getattr(self._prefs, name)


# scenarios ---------------------------------------------------------------------------------------
def scenario_register(config, report):
    """Install, enable, disable and enable again; report what is registered at each step."""
    module = install(config["kind"], config["zip"])
    session = submodule(module, "session")
    report["module"] = module
    report["enabled"] = registered()
    report["prefs_class"] = type(bpy.context.preferences.addons[module].preferences).__name__
    report["file_handler_expected"] = hasattr(bpy.types, "FileHandler")
    report["timer_after_enable"] = bpy.app.timers.is_registered(session.tick)
    report["scene_props"] = sorted(bpy.context.scene.gen3d.bl_rna.properties.keys())
    report["handlers_when_enabled"] = sum(
        1 for handler in list(bpy.app.handlers.undo_post) + list(bpy.app.handlers.load_post)
        if getattr(handler, "__module__", "").startswith(module))
    report["drawn"] = draw_everything(module)
    addon_utils.disable(module, default_set=True, handle_error=_raise)
    report["disabled"] = registered()
    report["handlers_after_disable"] = sum(
        1 for handler in list(bpy.app.handlers.undo_post) + list(bpy.app.handlers.load_post)
        if getattr(handler, "__module__", "").startswith(module))
    addon_utils.enable(module, default_set=True, handle_error=_raise)
    report["re_enabled"] = registered()
    addon_utils.disable(module, default_set=True, handle_error=_raise)
    report["disabled_again"] = registered()


def scenario_job(config, report):
    """Generate through the sidebar operator with a real worker, then re-import and damaged re-import."""
    module = install(config["kind"], config["zip"])
    session = submodule(module, "session")
    configure(module, config)
    scene = bpy.context.scene
    scene.cursor.location = config["cursor"]
    # The artist's own datablocks that happen to carry the names a result would get: never renamed.
    existing = {}
    for name in config.get("existing", []):
        mesh = bpy.data.meshes.new(name)
        obj = bpy.data.objects.new(name, mesh)
        scene.collection.objects.link(obj)
        material = bpy.data.materials.new("Gen3D_" + name)
        image = bpy.data.images.new("Gen3D_%s_albedo" % name, 4, 4)
        existing[name] = (obj, mesh, material, image)
    set_request(scene, config)
    scene.gen3d.source = "FILE"
    scene.gen3d.filepath = config["image"]
    report["import_undo_flag"] = "UNDO" in bpy.types.GEN3D_OT_import_result.bl_options
    result, error = run_operator(bpy.ops.gen3d.generate)
    report["generate"] = {"result": result, "error": error}
    assert error is None, error
    job = next(iter(session.manager.jobs.values()))
    ticks = []
    report["finished"] = pump(session, lambda: job.data.get("object_name") or job.data.get("import_error")
                              or job.status in ("FAILED", "CANCELLED"), config["timeout"], ticks)
    report["job"] = {"status": job.status, "message": job.message, "job_dir": job.job_dir,
                     "object_name": job.data.get("object_name"), "import_error": job.data.get("import_error")}
    report["items"] = job_items(scene)
    report["max_tick_ms"] = max(ticks) * 1000 if ticks else None
    report["worker_status"] = session.client_status(submodule(module, "prefs").backend_settings(
        bpy.context.preferences.addons[module].preferences))
    if job.data.get("object_name"):
        obj = bpy.data.objects[job.data["object_name"]]
        report["object"] = describe_object(obj)
        report["active"] = bpy.context.view_layer.objects.active.name
        report["selected"] = sorted(o.name for o in bpy.context.view_layer.objects if o.select_get())

        # Re-import from meta.json without AO in the base colour and without cursor placement.
        configure(module, config, ao_into_base_color=False, place_at_cursor=False, target_size=0.0)
        result, error = run_operator(bpy.ops.gen3d.import_result, filepath=os.path.join(job.job_dir, "meta.json"))
        report["reimport"] = {"result": result, "error": error}
        if error is None:
            report["reimported"] = describe_object(bpy.context.view_layer.objects.active)

        # A damaged copy is refused, naming the file, and leaves the scene alone.
        import shutil
        damaged = config["damaged_dir"]
        shutil.copytree(job.job_dir, damaged)
        with open(os.path.join(damaged, "albedo.png"), "r+b") as handle:
            handle.seek(100)
            handle.write(b"\0" * 16)
        before = scene_state()
        result, error = run_operator(bpy.ops.gen3d.import_result, filepath=damaged)
        report["damaged"] = {"result": result, "error": error, "unchanged": scene_state() == before,
                             "panel_message": scene.gen3d.message}
    report["orphan_partials"] = [name for name in os.listdir(os.path.dirname(job.job_dir)) if ".partial-" in name]
    report["existing"] = {name: [block.name for block in blocks] for name, blocks in existing.items()}


def scenario_errors(config, report):
    """Wrong Python path, unreadable image, worker that cannot start, a job the backend rejects."""
    module = install(config["kind"], config["zip"])
    session = submodule(module, "session")
    scene = bpy.context.scene
    set_request(scene, config)
    scene.gen3d.source = "FILE"

    def attempt(label, image, **prefs):
        configure(module, config, **prefs)
        scene.gen3d.filepath = image
        scene.gen3d.message = ""
        before = scene_state()
        result, error = run_operator(bpy.ops.gen3d.generate)
        report[label] = {"result": result, "error": error, "panel_message": scene.gen3d.message,
                         "panel_is_error": scene.gen3d.message_is_error, "queued": len(session.manager.jobs),
                         "unchanged": scene_state() == before}
        return before

    attempt("missing_python", config["image"], python_path=config["missing_python"])
    attempt("not_executable", config["image"], python_path=config["not_executable"])
    attempt("unreadable_image", config["bad_image"])
    attempt("missing_image", config["bad_image"] + ".does-not-exist")

    def run_to_end(label, image, **prefs):
        before = attempt(label, image, **prefs)
        job = list(session.manager.jobs.values())[-1]
        finished = pump(session, lambda: not job.active and not session._imports, config["timeout"])
        report[label].update(finished=finished, status=job.status, job_message=job.message,
                             error_code=(job.error or {}).get("code"), panel_message=scene.gen3d.message,
                             panel_is_error=scene.gen3d.message_is_error, items=job_items(scene),
                             unchanged=scene_state() == before, folder_exists=os.path.exists(job.job_dir))

    run_to_end("python_without_backend", config["image"], python_path=config["python_without_backend"])
    run_to_end("backend_rejects", config["empty_image"], python_path=config["prefs"]["python_path"])


def scenario_crash_cancel(config, report):
    """Kill the worker mid-job; the next job restarts it. Then Cancel a running job and time it."""
    module = install(config["kind"], config["zip"])
    session = submodule(module, "session")
    configure(module, config)
    scene = bpy.context.scene
    set_request(scene, config)
    scene.gen3d.source = "FILE"
    scene.gen3d.filepath = config["image"]

    def start_job():
        result, error = run_operator(bpy.ops.gen3d.generate)
        assert error is None, error
        job = list(session.manager.jobs.values())[-1]
        running = pump(session, lambda: job.stage in ("shape", "texture") or not job.active, config["timeout"])
        client = job.client
        return job, running, client

    job, running, client = start_job()
    first_pid = client.worker.pid
    report["first"] = {"running": running, "stage": job.stage, "pid": first_pid}
    before = scene_state()
    os.kill(first_pid, signal.SIGKILL)
    pump(session, lambda: not job.active, 30)
    report["crash"] = {"status": job.status, "message": job.message, "panel_message": scene.gen3d.message,
                       "unchanged": scene_state() == before, "folder_exists": os.path.exists(job.job_dir),
                       "partials": [n for n in os.listdir(os.path.dirname(job.job_dir)) if ".partial-" in n]}

    job, running, client = start_job()
    second_pid = client.worker.pid
    report["second"] = {"running": running, "stage": job.stage, "pid": second_pid, "status": job.status}
    started = time.perf_counter()
    result, error = run_operator(bpy.ops.gen3d.cancel, job_id=job.job_id)
    pump(session, lambda: not job.active, 10)
    report["cancel"] = {"result": result, "error": error, "seconds": time.perf_counter() - started,
                        "status": job.status, "folder_exists": os.path.exists(job.job_dir),
                        "partials": [n for n in os.listdir(os.path.dirname(job.job_dir)) if ".partial-" in n],
                        "worker_alive": client.worker.alive() if client.worker else False,
                        "items": job_items(scene), "unchanged": scene_state() == before}

    # A queued job is cancelled on the spot, before it reaches the backend.
    job_a, _running, _client = start_job()
    run_operator(bpy.ops.gen3d.generate)
    job_b = list(session.manager.jobs.values())[-1]
    run_operator(bpy.ops.gen3d.cancel, job_id=job_b.job_id)
    report["queued_cancel"] = {"status": job_b.status, "first_active": job_a.active}

    # Disabling the add-on while a job runs cancels it and stops the worker process.
    worker = job_a.client.worker
    alive_before = worker.alive()
    started = time.perf_counter()
    addon_utils.disable(module, default_set=True, handle_error=_raise)
    report["disable"] = {"worker_alive_before": alive_before, "worker_alive_after": worker.alive(),
                         "seconds": time.perf_counter() - started, "job_status": job_a.status}


def scenario_exit_with_job(config, report):
    """Leave Blender while a job runs: the worker must not outlive it (checked by the caller)."""
    module = install(config["kind"], config["zip"])
    session = submodule(module, "session")
    configure(module, config)
    set_request(bpy.context.scene, config)
    bpy.context.scene.gen3d.source = "FILE"
    bpy.context.scene.gen3d.filepath = config["image"]
    result, error = run_operator(bpy.ops.gen3d.generate)
    assert error is None, error
    job = list(session.manager.jobs.values())[-1]
    report["running"] = pump(session, lambda: job.stage in ("shape", "texture") or not job.active, config["timeout"])
    report["worker_pid"] = job.client.worker.pid
    report["job_id"], report["job_dir"] = job.job_id, job.job_dir
    if config.get("blend"):
        bpy.ops.wm.save_as_mainfile(filepath=config["blend"])     # the artist saves, then quits
        report["saved_blend"] = True
        report["saved_progress"] = bpy.context.scene.gen3d.jobs[0].progress


def scenario_reopen(config, report):
    """Open a file saved while a job ran, after that Blender closed: the row says what became of the
    job; Re-import brings the result in (textures packed when the preference says so)."""
    module = install(config["kind"], config["zip"])
    session = submodule(module, "session")
    configure(module, config)
    bpy.ops.wm.open_mainfile(filepath=config["blend"])
    report["after_load"] = job_items(bpy.context.scene)
    report["watching"] = bpy.app.timers.is_registered(session._watch_orphans)
    deadline = time.monotonic() + config["timeout"]
    while session._settle_orphans() and time.monotonic() < deadline:   # the timer's work, by hand
        time.sleep(0.2)
    report["settled"] = job_items(bpy.context.scene)
    item = bpy.context.scene.gen3d.jobs[0]
    result, error = run_operator(bpy.ops.gen3d.import_result, job_id=item.job_id)
    report["import"] = {"result": result, "error": error}
    obj = bpy.context.view_layer.objects.active
    if error is None and obj is not None:
        report["object"] = describe_object(obj)
        report["packed"] = sorted(node.image.packed_file is not None for node in obj.data.materials[0].node_tree.nodes
                                  if node.bl_idname == "ShaderNodeTexImage")
    report["items"] = job_items(bpy.context.scene)


def scenario_install_persist(config, report):
    """Install and enable the add-on and save the preferences, as a user would once."""
    report["module"] = install(config["kind"], config["zip"])
    bpy.ops.wm.save_userpref()


def scenario_sources(config, report):
    """How each kind of loaded image becomes a file for the backend (images.loaded_image_source)."""
    module = install(config["kind"], config["zip"])
    images = submodule(module, "images")
    out = config["out"]
    on_disk = bpy.data.images.load(config["image"])
    packed = bpy.data.images.load(config["image"])
    packed.pack()
    generated = bpy.data.images.new("painted", 32, 16, alpha=True)
    generated.pixels.foreach_set([0.25, 0.5, 0.75, 1.0] * (32 * 16))
    empty = bpy.data.images.new("nothing", 8, 8)
    empty.source = "FILE"
    empty.filepath = os.path.join(out, "missing.png")
    for label, image in (("on_disk", on_disk), ("packed", packed), ("generated", generated), ("empty", empty)):
        try:
            path, name = images.loaded_image_source(image, out)
            with open(path, "rb") as handle:
                data = handle.read()
            probe = bpy.data.images.load(path)
            report[label] = {"path": path, "name": name, "bytes": len(data), "size": list(probe.size),
                             "first_pixel": [round(v, 2) for v in probe.pixels[:4]]}
            bpy.data.images.remove(probe)
        except Exception as exc:
            report[label] = {"error": str(exc)}
    report["images_after"] = sorted(image.name for image in bpy.data.images)


def scenario_polish(config, report):
    """The sidebar's small behaviours: presets, stale messages, redo panel, engine names, what the
    job list offers per status, Steps/Guidance only for engines with a sampler, Open Folder."""
    module = install(config["kind"], config["zip"])
    configure(module, config)
    props = bpy.context.scene.gen3d
    ui = submodule(module, "ui")
    props.preset = "FAST"
    report["fast_faces"] = props.face_count
    props.face_count = 12345
    report["preset_after_edit"] = props.preset
    props.preset = "BALANCED"
    report["balanced"] = [props.preset, props.face_count, props.texture_size]

    props.source, props.filepath = "FILE", config["missing_image"]
    run_operator(bpy.ops.gen3d.generate)
    report["message_before"] = props.message
    props.filepath = config["image"]
    report["message_after_new_image"] = props.message

    hidden = {}
    for op, names in ((bpy.ops.gen3d.import_result, ("filepath", "job_id")), (bpy.ops.gen3d.generate, ("filepath",))):
        properties = op.get_rna_type().properties
        hidden.update({"%s.%s" % (op.idname_py(), name): properties[name].is_hidden and properties[name].is_skip_save
                       for name in names})
    report["hidden"] = hidden
    report["engine_names"] = {item.identifier: item.name
                              for item in props.bl_rna.properties["engine"].enum_items}

    panel_props = {}
    for engine in ("builtin", "hunyuan3d-2.1"):
        props.engine = engine
        log = []
        bpy.types.GEN3D_PT_advanced.draw(LayoutHolder(log), bpy.context)
        panel_props[engine] = sorted(entry[1] for entry in log if entry[0] == "prop")
    props.engine = "builtin"
    report["advanced_props"] = panel_props

    offers, summaries = {}, {}
    for status, message in (("COMPLETED", ""), ("FAILED", "No object was found"), ("CANCELLED", "during shape")):
        props.jobs.clear()
        item = props.jobs.add()
        item.job_id, item.name, item.status, item.message = "c" * 16, "cone", status, message
        item.folder = config["folder"]
        if status == "COMPLETED":
            item.object_name = "cone"
        props.job_index = 0
        log = []
        bpy.types.GEN3D_PT_jobs.draw(LayoutHolder(log), bpy.context)
        offers[status] = sum(1 for entry in log if entry[:2] == ["operator", "gen3d.import_result"])
        summaries[status] = ui.job_summary(item)
    report["import_offers"], report["summaries"] = offers, summaries

    os.environ["PATH"] = config["empty_path"]           # no xdg-open to be found
    result, error = run_operator(bpy.ops.gen3d.open_folder, job_id="c" * 16)
    report["open_folder"] = {"result": result, "error": error, "message": props.message}
    props.jobs.clear()


def scenario_inspect_blend(config, report):
    """Open a .blend (written by batch.py) and describe the Gen3D objects in it."""
    bpy.ops.wm.open_mainfile(filepath=config["blend"])
    report["all_objects"] = sorted(obj.name for obj in bpy.data.objects)
    # The add-on is not enabled here: read its job list as the ID properties the .blend stores.
    jobs = (bpy.context.scene.get("gen3d") or {}).get("jobs") or []
    report["jobs"] = [{key: job.get(key) for key in ("job_id", "name", "status", "folder", "object_name")}
                      for job in jobs]
    report["objects"] = {}
    for obj in bpy.data.objects:
        if "gen3d_folder" not in obj:
            continue
        entry = describe_object(obj)
        entry["folder"] = obj["gen3d_folder"]
        entry["images_exist"] = all(os.path.isfile(bpy.path.abspath(node.image.filepath))
                                    for node in obj.data.materials[0].node_tree.nodes
                                    if node.bl_idname == "ShaderNodeTexImage")
        report["objects"][obj.name] = entry


def scenario_warning(config, report):
    """A job whose cut-out is unsure (a cluttered photo): it completes and is imported, and the job's
    row, the panel's message and the object say so."""
    module = install(config["kind"], config["zip"])
    session, ui = submodule(module, "session"), submodule(module, "ui")
    configure(module, config)
    scene = bpy.context.scene
    set_request(scene, config)
    scene.gen3d.source = "FILE"
    scene.gen3d.filepath = config["image"]
    result, error = run_operator(bpy.ops.gen3d.generate)
    assert error is None, error
    job = next(iter(session.manager.jobs.values()))
    report["finished"] = pump(session, lambda: job.data.get("object_name") or job.data.get("import_error")
                              or job.status in ("FAILED", "CANCELLED"), config["timeout"])
    report["job"] = {"status": job.status, "message": job.message, "warning": job.data.get("warning"),
                     "object_name": job.data.get("object_name"), "import_error": job.data.get("import_error")}
    item = scene.gen3d.jobs[0]
    report["row"] = ui.job_summary(item)
    report["item_warning"] = item.warning
    report["panel"] = {"message": scene.gen3d.message, "is_warning": scene.gen3d.message_is_warning,
                       "is_error": scene.gen3d.message_is_error}
    obj = bpy.data.objects.get(job.data.get("object_name") or "")
    report["object_warning"] = obj.get("gen3d_warning") if obj is not None else None


SCENARIOS = {name[len("scenario_"):]: function for name, function in globals().items()
             if name.startswith("scenario_")}


def main():
    scenario, config_path, report_path = script_args()[:3]
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    report = {"blender": bpy.app.version_string}
    code = 0
    try:
        bpy.ops.wm.read_factory_settings(use_empty=True)
        SCENARIOS[scenario](config, report)
    except Exception:
        report["exception"] = traceback.format_exc()
        code = 1
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2, default=str)
    sys.stdout.flush()
    if report.get("saved_blend") or not bpy.app.binary_path:
        # The bpy 4.5 module deadlocks in its C exit handlers after saving a .blend (its delayed-close
        # thread), and also when daemon threads (the add-on's worker readers, a Python check) are still
        # running at exit: run Python's atexit handlers, the add-on's exit path among them, then leave.
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
