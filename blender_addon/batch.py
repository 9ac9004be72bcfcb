"""Headless batch: generate and import several images without the UI.

    blender -b [scene.blend] -P blender_addon/batch.py -- IMAGES... --out DIR [--backend local|remote]
        [--engine E] [--save-blend FILE] [--python PY] [--backend-dir DIR] [--device auto|cpu|cuda]
        [--format glb,obj,ply,usdz] ...

Each image becomes <DIR>/<image name>/ (the job folder) and an object standing on the ground (z = 0),
the objects in a row along X that do not overlap; DIR/summary.json lists what happened to each image,
the mesh files of each result, and the saved .blend's Gen3D job list holds the batch's jobs (Re-import, Open Folder work there). The
startup scene's default Cube, Camera and Light are removed unless --keep-scene (a .blend given on
the command line is always kept). --format: the backend writes
obj (+ mtl) and ply next to the GLB; usdz is this Blender's USD exporter run on the imported object
(its material as UsdPreviewSurface, the textures packed in), written to <job folder>/mesh.usdz. The exit code is 0 when every image was generated and imported,
1 otherwise (2 for bad arguments). Background Blender has no timer loop, so this script pumps the
add-on's job queue itself.

The add-on is the installed one when it is enabled in the preferences, else the package this file
sits in (the source tree's blender_addon/ or an unpacked add-on folder). Jobs on the local backend
run in the Gen3D environment's Python (--python, $GEN3D_PYTHON or the project's .venv), so
Blender's own Python never needs torch.
"""

import argparse
import importlib
import importlib.util
import json
import os
import sys
import time
import traceback

ADDON_NAME = "gen3d"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
USDZ_FILE = "mesh.usdz"


class UsageError(Exception):
    """A bad command line found once the add-on (and so the contract) is loaded: exit EXIT_USAGE."""


VIEW_NAMES = ("right", "back", "left")
VIEW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def views_for(image, folder):
    """The request's `views` for `image` from `folder`: <stem>_right.png etc., or None when none exist."""
    if not folder:
        return None
    stem = os.path.splitext(os.path.basename(image))[0]
    views = {}
    for name in VIEW_NAMES:
        for ext in VIEW_EXTENSIONS:
            path = os.path.join(folder, "%s_%s%s" % (stem, name, ext))
            if os.path.isfile(path):
                views[name] = {"image_path": os.path.abspath(path)}
                break
    return views or None


def script_args():
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="blender -b -P batch.py --",
                                     description="Generate 3D objects from images and import them.")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    parser.add_argument("--out", required=True, metavar="DIR", help="job folders and summary.json go here")
    parser.add_argument("--backend", choices=("local", "remote"), default=None,
                        help="default: the installed add-on's preference, else local")
    parser.add_argument("--engine", default="builtin")
    parser.add_argument("--texture-engine", default=None)
    parser.add_argument("--views-from", metavar="DIR",
                        help="extra views: DIR/<image name>_right.png, _back.png, _left.png (any that exist; "
                             ".jpg/.jpeg/.webp too)")
    parser.add_argument("--save-blend", metavar="FILE", help="save the scene with the imported objects here")
    parser.add_argument("--python", help="local backend: Python of the Gen3D environment (default $GEN3D_PYTHON)")
    parser.add_argument("--backend-dir", help="local backend: the Gen3D project folder (holding backend_local/)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    parser.add_argument("--remote-url", help="remote backend: endpoint URL")
    parser.add_argument("--api-key", default=None, help="remote backend: API key (default $GEN3D_API_KEY)")
    parser.add_argument("--face-count", type=int)
    parser.add_argument("--texture-size", type=int)
    parser.add_argument("--octree-resolution", type=int)
    parser.add_argument("--steps", dest="num_inference_steps", type=int)
    parser.add_argument("--guidance-scale", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--no-texture", action="store_true")
    parser.add_argument("--no-remove-background", action="store_true")
    parser.add_argument("--target-size", type=float, default=None, help="largest side of each object (default 1)")
    parser.add_argument("--spacing", type=float, default=None,
                        help="gap between neighbours in the row (default 0.25 x target size)")
    parser.add_argument("--keep-scene", action="store_true",
                        help="keep the startup scene's default objects (Cube, Camera, Light)")
    parser.add_argument("--ao-into-base-color", action="store_true")
    parser.add_argument("--format", default="glb", metavar="LIST",
                        help="mesh files per result, comma-separated: glb (always), obj, ply, usdz")
    parser.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    return parser.parse_args(argv)


def load_addon():
    """(package module, installed?) - the enabled add-on, else the folder this script is in."""
    import bpy
    for key in bpy.context.preferences.addons.keys():
        if key == ADDON_NAME or key.endswith("." + ADDON_NAME):
            return sys.modules.get(key) or importlib.import_module(key), True
    here = os.path.dirname(os.path.abspath(__file__))
    name = ADDON_NAME if ADDON_NAME not in sys.modules else ADDON_NAME + "_batch"
    spec = importlib.util.spec_from_file_location(name, os.path.join(here, "__init__.py"),
                                                  submodule_search_locations=[here])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module, False


def request_fields(args):
    fields = {"engine": args.engine}
    for name in ("texture_engine", "face_count", "texture_size", "octree_resolution", "num_inference_steps",
                 "guidance_scale", "seed"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    if args.no_texture:
        fields["texture"] = False
    if args.no_remove_background:
        fields["remove_background"] = False
    return fields


def clear_startup_scene(bpy):
    """Remove the startup file's objects (and the data only they used), so the batch starts empty."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for collection in (bpy.data.meshes, bpy.data.cameras, bpy.data.lights, bpy.data.materials):
        for block in list(collection):
            if block.users == 0:
                collection.remove(block)
    # Without this the view layer still lists the removed objects (as None, bpy 4.5) until the next update.
    bpy.context.view_layer.update()


def usd_exporter_available(bpy):
    """Debian's Blender 3.4 and other builds without USD have no wm.usd_export operator."""
    try:
        bpy.ops.wm.usd_export.get_rna_type()
    except (AttributeError, KeyError):
        return False
    return True


def export_usdz(bpy, obj, path):
    """Write `obj` alone to a .usdz with Blender's USD exporter: its material as UsdPreviewSurface with
    the textures packed into the archive, Y up (USD's and AR viewers' usual axis), base on the origin."""
    known = bpy.ops.wm.usd_export.get_rna_type().properties.keys()
    options = dict(filepath=path, selected_objects_only=True, export_materials=True, generate_preview_surface=True,
                   export_uvmaps=True, export_normals=True, export_animation=False)
    # Options whose names changed across 3.x-4.5: pass the ones this Blender has.
    optional = {"convert_orientation": True, "export_global_up_selection": "Y",
                "export_global_forward_selection": "NEGATIVE_Z", "export_lights": False, "export_cameras": False}
    if "export_textures_mode" in known:
        optional["export_textures_mode"] = "NEW"
    else:
        optional["export_textures"] = True
    options.update({key: value for key, value in optional.items() if key in known})
    view_layer = bpy.context.view_layer
    selected, active, location = list(bpy.context.selected_objects), view_layer.objects.active, obj.location.copy()
    try:
        for other in selected:
            other.select_set(False)
        obj.select_set(True)
        view_layer.objects.active = obj
        obj.location = (0.0, 0.0, 0.0)      # each file on its own origin, not at its place in the grid
        result = bpy.ops.wm.usd_export(**options)
    finally:
        obj.location = location
        obj.select_set(False)
        for other in selected:
            other.select_set(True)
        view_layer.objects.active = active
    if "FINISHED" not in result or not os.path.isfile(path):
        raise RuntimeError("Blender's USD exporter did not write %s" % path)
    return path



class Batch:
    def __init__(self, args, addon, installed):
        def sub(name):
            return importlib.import_module(addon.__name__ + "." + name)

        import bpy
        self.bpy = bpy
        self.args = args
        self.contract, self.jobs, self.importer, self.images = sub("contract"), sub("jobs"), sub("importer"), \
            sub("images")
        if not hasattr(bpy.types.Scene, "gen3d"):   # from the source tree: register, for the saved job list
            addon.register()
        self.session = sub("session")
        settings_module, prefs_module = sub("settings"), (sub("prefs") if installed else None)
        prefs = prefs_module.get_prefs() if installed else None
        base = prefs_module.backend_settings(prefs) if installed else settings_module.BackendSettings()
        base_import = prefs_module.import_settings(prefs) if installed else settings_module.ImportSettings()
        overrides = dict(output_dir=os.path.abspath(args.out), online_access=getattr(bpy.app, "online_access", True))
        for key, value in (("backend", args.backend.upper() if args.backend else None), ("python", args.python),
                           ("backend_dir", args.backend_dir), ("device", args.device),
                           ("remote_url", args.remote_url),
                           ("api_key", args.api_key or os.environ.get("GEN3D_API_KEY"))):
            if value is not None:
                overrides[key] = value
        self.settings = settings_module.BackendSettings(**dict(base.as_dict(), **overrides)).resolve()
        target = base_import.target_size if args.target_size is None else args.target_size
        self.import_options = settings_module.ImportSettings(
            place_at_cursor=False, target_size=target,
            ao_into_base_color=args.ao_into_base_color or base_import.ao_into_base_color)
        self.gap = args.spacing if args.spacing is not None else 0.25 * (target or 2.0)
        self._next_x = 0.0                # where the row's next object starts
        self.formats = self._check_formats(args.format)
        self.manager = self.jobs.JobManager()
        self.manager.on_change.append(self._show_progress)
        self.manager.on_change.append(self.session.sync_job)      # the scene's job list, saved with the file
        self.manager.on_finished.append(self._finished)
        self.addon = {"module": addon.__name__, "path": os.path.dirname(os.path.abspath(addon.__file__)),
                      "installed": installed}
        self.rows = []                    # one per image, in the order given
        self._row_of_job = {}
        self._last_line = {}

    def _check_formats(self, text):
        names = [name.strip().lower() for name in text.split(",") if name.strip()]
        request = self.contract.request
        known = request.MESH_FORMATS + request.ADDON_FORMATS
        unknown = [name for name in names if name not in known]
        if unknown:
            raise UsageError("--format: %r is not a format; choose among %s" % (unknown[0], ", ".join(known)))
        if "usdz" in names and not usd_exporter_available(self.bpy):
            raise UsageError("--format usdz needs Blender's USD exporter, which this Blender (%s) lacks (Debian's "
                             "package is built without USD). Run the batch with Blender 4.2 or later from "
                             "blender.org." % self.bpy.app.version_string)
        return names

    def _row(self, image):
        row = {"image": image, "name": None, "status": "FAILED", "job_dir": None, "object": None, "error": None,
               "seconds": 0.0, "files": {}, "warnings": []}
        self.rows.append(row)
        return row

    def submit_all(self):
        used = set()
        request = request_fields(self.args)
        backend_formats = [name for name in self.formats if name in self.contract.request.MESH_FORMATS]
        if set(backend_formats) - {"glb"}:
            request["formats"] = backend_formats
        for image in self.args.images:
            row = self._row(os.path.abspath(image))
            try:
                path, name = self.images.file_source(image)
                folder_name = self.jobs.safe_name(name)
                candidate, n = folder_name, 2
                while candidate in used:
                    candidate, n = "%s-%d" % (folder_name, n), n + 1
                used.add(candidate)
                row["name"], row["job_dir"] = name, os.path.join(self.settings.output_dir, candidate)
                views = views_for(image, self.args.views_from)
                job = self.manager.submit(name, path, dict(request, views=views) if views else request,
                                          self.settings, job_dir=row["job_dir"])
            except self.contract.Gen3DError as exc:
                row["error"] = exc.to_dict()["error"]
                print("gen3d batch: %s: %s" % (image, exc.message), file=sys.stderr)
                continue
            row["status"] = "QUEUED"
            self._row_of_job[job.job_id] = row

    def _show_progress(self, job):
        line = "%s: %s %d%%" % (job.name, job.stage, round(job.progress * 100))
        if job.active and self._last_line.get(job.job_id) != line.rsplit(" ", 1)[0]:
            self._last_line[job.job_id] = line.rsplit(" ", 1)[0]
            print("gen3d batch: " + line, flush=True)

    def _finished(self, job):
        row = self._row_of_job[job.job_id]
        row["status"], row["seconds"] = job.status, round(job.seconds, 2)
        if job.status == self.jobs.FAILED:
            row["error"] = job.error
        elif job.status == self.jobs.COMPLETED:
            try:
                obj = self.importer.import_result(self.bpy.context, job.job_dir, name=job.name,
                                                  options=self.import_options, location=(0.0, 0.0, 0.0))
                self._line_up(obj)
                row["object"] = job.data["object_name"] = obj.name
                self._record_files(row, job.job_dir, obj)
            except self.contract.Gen3DError as exc:
                row["status"], row["error"] = "FAILED", exc.to_dict()["error"]
                job.data["import_error"] = "Import failed: %s" % exc.message
        self.session.sync_job(job, force=True)
        print("gen3d batch: %s: %s%s" % (job.name, row["status"].lower(),
                                         (" - " + row["error"]["message"]) if row["error"] else ""), flush=True)
        for warning in row.get("warnings") or ():
            print("gen3d batch: %s: warning: %s" % (job.name, warning), flush=True)

    def _line_up(self, obj):
        """Move obj (standing on the ground at the origin) to the row's next free place along X."""
        low, high = self.importer.world_bounds(obj)
        obj.location.x += self._next_x - low.x
        self._next_x += (high.x - low.x) + self.gap
        self.bpy.context.view_layer.update()

    def _record_files(self, row, job_dir, obj):
        """row["files"]: {format: path} of the result's mesh files, the usdz exported here when asked for."""
        manifest = self.contract.manifest.read_manifest(job_dir)
        formats = manifest["mesh"].get("formats") or {"glb": manifest["mesh"]["file"]}
        row["files"] = {name: os.path.join(job_dir, file) for name, file in formats.items()}
        row["warnings"] = self.importer.result_warnings(manifest)   # e.g. an unsure background removal
        if "usdz" in self.formats:
            try:
                row["files"]["usdz"] = export_usdz(self.bpy, obj, os.path.join(job_dir, USDZ_FILE))
            except (RuntimeError, OSError) as exc:
                errors = self.contract.errors
                raise self.contract.Gen3DError(errors.INTERNAL, "The USDZ export of %s failed (%s). The GLB in %s "
                                               "is fine; export it from Blender by hand (File > Export > Universal "
                                               "Scene Description)." % (obj.name, exc, job_dir), retryable=False)

    def run(self):
        if not self.args.keep_scene and not self.bpy.data.filepath:
            clear_startup_scene(self.bpy)
        self.submit_all()
        try:
            finished = self.manager.wait(timeout=self.args.timeout)
        finally:
            self.manager.shutdown()
        if not finished:
            for row in self.rows:
                if row["status"] in ("QUEUED", "RUNNING", "CANCELLED") and not row["error"]:
                    row["status"] = "FAILED"
                    row["error"] = {"code": "TIMEOUT", "message": "The batch timed out after %s s."
                                    % self.args.timeout, "stage": None, "retryable": True}
        summary = {"ok": sum(row["status"] == "COMPLETED" for row in self.rows),
                   "failed": sum(row["status"] != "COMPLETED" for row in self.rows),
                   "backend": self.settings.backend.lower(), "output_dir": self.settings.output_dir,
                   "blend": None, "addon": self.addon, "results": self.rows}
        if self.args.save_blend:
            path = os.path.abspath(self.args.save_blend)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self.bpy.ops.wm.save_as_mainfile(filepath=path)
            summary["blend"] = path
        os.makedirs(self.settings.output_dir, exist_ok=True)
        with open(os.path.join(self.settings.output_dir, "summary.json"), "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)
        print("gen3d batch: %d generated, %d failed; summary in %s" % (
            summary["ok"], summary["failed"], os.path.join(self.settings.output_dir, "summary.json")), flush=True)
        return EXIT_OK if summary["failed"] == 0 else EXIT_FAILED


def main(argv=None):
    try:
        args = parse_args(script_args() if argv is None else argv)
    except SystemExit as exc:             # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    started = time.time()
    try:
        code = Batch(args, *load_addon()).run()
    except UsageError as exc:
        print("gen3d batch: %s" % exc, file=sys.stderr, flush=True)
        return EXIT_USAGE
    except Exception:                     # Blender would print this and still exit 0
        traceback.print_exc()
        return EXIT_FAILED
    print("gen3d batch: done in %.1f s" % (time.time() - started), flush=True)
    return code


def leave(code):
    """sys.exit's code is what `blender -b -P` returns (an uncaught exception would give 0). In the bpy
    module, Blender's C exit handlers deadlock while daemon threads (a worker's readers) still run: run
    Python's atexit handlers, the add-on's exit path among them, then leave at once."""
    sys.stdout.flush()
    sys.stderr.flush()
    if bpy_module_mode():
        import atexit
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else EXIT_FAILED)
    sys.exit(code)


def bpy_module_mode():
    bpy = sys.modules.get("bpy")
    return bpy is not None and not getattr(bpy.app, "binary_path", "")


if __name__ == "__main__":
    sys.stdout.flush()
    leave(main())
