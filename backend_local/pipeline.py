"""The local pipeline: preprocess -> shape -> texture -> export, one job at a time, models kept loaded.

A result is staged in a hidden sibling folder and moved into place only when complete (meta.json is
written last), so a failed or cancelled job never leaves something that looks like a result.
"""

import errno
import importlib
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
import uuid

import cv2
import numpy as np
import torch

from shared.errors import CANCELLED, IMAGE_TOO_LARGE, INTERNAL, INVALID_INPUT, OUT_OF_MEMORY, STORAGE, Gen3DError
from shared.manifest import INPUT_FILE, MESH_FILE, META_FILE, build_manifest, map_file, write_manifest
from shared.progress import ProgressTracker
from shared.request import MAX_MESH_BYTES, TEXTURE_EXISTING_ENGINES

from . import device as devices
from shared.request import decode_base64_image

from . import export, export_formats, foreground, imageio, upright
from .engines.base import MULTIVIEW, SHAPE, TEXTURE, TEXTURE_EXISTING, JobContext, ShapeResult
from .engines.registry import ENGINES, EngineRegistry
from . import offload
from .memory import MemoryPlanner
from .mesh_ops import mesh_summary, smooth_vertex_normals
from .texturing import given_mesh, mesh_view

MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
# A disk that cannot take the job's files: STORAGE, said without the folder's path.
DISK_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM)
# meta.json's frame for a given mesh: its own, untouched (not the upright frame generated shapes get).
GIVEN_FRAME = "mesh"


def write_maps(maps, staging):
    """Write the PBR maps as PNGs into the staging folder; returns the encoded maps and the packed ORM
    image the GLB embeds (not written as its own file)."""
    maps = dict(maps)
    maps["orm"] = export.orm_image(maps["ao"], maps["roughness"], maps["metallic"])
    encoded = export.encode_pngs(maps)
    orm = encoded.pop("orm")
    for key, data in encoded.items():
        with open(os.path.join(staging, map_file(key)), "wb") as handle:
            handle.write(data)
    return encoded, orm


def new_job_id():
    return uuid.uuid4().hex[:16]


def load_source(request, cancel=None):
    """The raw bytes (or a path) of the request's image; a download stops as soon as `cancel` is set."""
    return _load({"image": request.image, "image_url": request.image_url, "image_path": request.image_path},
                 cancel)


def _load(source, cancel):
    """Bytes or a path for one image source {"image"|"image_url"|"image_path": value} (the main
    image or a view): base64 decoded, a path as given, a URL fetched with the same limits."""
    if source.get("image"):
        return decode_base64_image(source["image"])
    if source.get("image_path"):
        return os.path.expanduser(source["image_path"])
    from .fetch import fetch_image  # only jobs with image_url need the network
    return fetch_image(source["image_url"], max_bytes=MAX_DOWNLOAD_BYTES, cancel=cancel)


def view_file(name):
    """The preprocessed extra view kept in the result, beside input.png."""
    return "input_%s.png" % name


def check_multiview(request):
    """A request with views to an engine that cannot use them is INVALID_INPUT naming those that can
    (checked from the engines' declared capabilities, before any is loaded or found unavailable)."""
    if not request.views:
        return
    for name in (request.engine, request.effective_texture_engine):
        if name is not None and MULTIVIEW not in _declared_capabilities(name):
            able = [other for other in ENGINES if MULTIVIEW in _declared_capabilities(other)]
            raise Gen3DError(INVALID_INPUT, "The engine '%s' cannot use extra views ('views'). Use %s, or send "
                             "only the front image." % (name, " or ".join("'%s'" % n for n in able)),
                             stage="queued", retryable=False)


def _declared_capabilities(name):
    if name not in ENGINES:
        return frozenset()
    module, _, cls = ENGINES[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls).capabilities
    except Exception:    # an engine whose packages are missing still declares nothing here
        return frozenset()


def load_mesh_source(request, cancel=None):
    """The bytes (or a path) of the request's mesh, downloaded with the image's SSRF limits."""
    if request.mesh:
        return request.mesh_bytes()
    if request.mesh_path:
        return os.path.expanduser(request.mesh_path)
    from .fetch import fetch_image
    try:
        return fetch_image(request.mesh_url, max_bytes=MAX_MESH_BYTES, cancel=cancel)
    except Gen3DError as exc:
        if exc.code != IMAGE_TOO_LARGE:
            raise
        raise Gen3DError(INVALID_INPUT, "The mesh at %s is larger than %d MB. Send a smaller mesh." %
                         (request.mesh_url, MAX_MESH_BYTES // 2 ** 20), stage="preprocess", retryable=False)


def _bad_output(message):
    return Gen3DError(INVALID_INPUT, message, stage="queued", retryable=False)


def prepare_output(out_dir, overwrite=True):
    """Check that a result can be written to `out_dir` before any work starts: refuse a folder holding
    something other than an earlier Gen3D result, an earlier result unless `overwrite`, a path under a
    file, and a place we may not write to (each an INVALID_INPUT saying what to do)."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise _bad_output("The output path %s is a file, not a folder; choose a folder." % out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        if not os.path.isfile(os.path.join(out_dir, META_FILE)):
            raise _bad_output("The output folder %s already holds other files; choose an empty or new folder."
                              % out_dir)
        if not overwrite:
            raise _bad_output("The output folder %s already holds a Gen3D result; choose another folder, or "
                              "pass --overwrite to replace it." % out_dir)
    # The result is staged beside out_dir, so its parent (made if missing) must be a writable folder.
    parent = os.path.dirname(out_dir)
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise _bad_output("Cannot create the output folder %s: %s is a file, not a folder. Choose another "
                          "--out." % (out_dir, existing))
    try:   # a real write (os.access says yes to root even on a read-only file system)
        os.rmdir(tempfile.mkdtemp(prefix=".gen3d-write-check-", dir=existing))
    except OSError as exc:
        raise _bad_output("Cannot write the output folder %s: %s in %s. Choose a folder you can write to."
                          % (out_dir, exc.strerror or exc, existing))


def _make_staging(staging):
    try:
        os.makedirs(staging)
    except OSError as exc:
        raise _bad_output("Cannot create the output folder beside %s (%s). Choose a folder you can write to."
                          % (os.path.dirname(staging), exc.strerror or exc))


def _publish(staging, out_dir):
    """Move the finished staging folder into place, replacing an earlier result atomically enough:
    the old result is renamed away first and deleted only after the new one is in place."""
    old = None
    if os.path.isdir(out_dir):
        old = staging + ".old"
        os.rename(out_dir, old)
    os.rename(staging, out_dir)
    if old:
        shutil.rmtree(old, ignore_errors=True)


class Pipeline:
    def __init__(self, device="auto", settings=None, low_memory=None):
        self.device = devices.resolve_device(device)
        self.registry = EngineRegistry(settings)
        self.memory = MemoryPlanner(self.device, low_memory)
        self._lock = threading.Lock()   # one job at a time per device

    def run(self, request, out_dir, job_id=None, on_progress=None, cancel=None, overwrite=True):
        """Run one job into `out_dir`. Returns the manifest; raises Gen3DError on failure. An earlier
        result in `out_dir` is replaced only with `overwrite`."""
        job_id = job_id or new_job_id()
        out_dir = os.path.abspath(out_dir)
        tracker = ProgressTracker(job_id, on_progress)
        cancel = cancel or threading.Event()
        staging = os.path.join(os.path.dirname(out_dir), ".%s.partial-%s" % (os.path.basename(out_dir), job_id))
        with self._lock:
            try:
                prepare_output(out_dir, overwrite)
                _make_staging(staging)
                with devices.PeakMemory(self.device) as peak:
                    manifest = self._run(request, staging, job_id, tracker, cancel)
                manifest["peak_memory_mb"] = round(peak.peak_mb, 1)
                write_manifest(staging, manifest)
                _publish(staging, out_dir)
                tracker.finish("completed")
                return manifest
            except Gen3DError as exc:
                exc.stage = exc.stage or tracker.stage
                raise
            except (torch.cuda.OutOfMemoryError, MemoryError) as exc:
                offload.free_failure(exc)       # its frames hold the activations: free them before measuring
                failure = Gen3DError(OUT_OF_MEMORY, self._oom_message(exc, tracker.stage), stage=tracker.stage,
                                     retryable=True)
                del exc
                raise failure from None
            except OSError as exc:
                if exc.errno not in DISK_ERRNOS:
                    raise self._internal(exc, tracker.stage)
                raise Gen3DError(STORAGE, "Could not write the job's files during %s (%s). The output disk is full "
                                 "or read-only; free space or fix its permissions." % (tracker.stage, exc.strerror),
                                 stage=tracker.stage, retryable=True)
            except Exception as exc:
                raise self._internal(exc, tracker.stage)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                self.memory.after_job(self.registry)

    @staticmethod
    def _internal(exc, stage):
        traceback.print_exc(file=sys.stderr)
        return Gen3DError(INTERNAL, "Gen3D hit an unexpected error during %s (%s: %s). Try again; if it keeps "
                          "failing, report it with the worker log." % (stage, type(exc).__name__, exc),
                          stage=stage, retryable=False)
    def _texture_given(self, job, plan, texture_engine, staging, job_id, timings, started, report):
        """Paint a given mesh and write it back with its own vertices, faces (order kept) and UVs."""
        timings["shape"] = 0.0
        t0 = time.perf_counter()
        report("texture", 0.0, "painting the given mesh with %s" % texture_engine.name)
        self.memory.prepare(self.registry, texture_engine, TEXTURE)
        shape = ShapeResult(plan.camera_vertices, plan.mesh.faces, normals=plan.camera_normals,
                            uv_layout=(plan.vertex_map, plan.faces, plan.uvs))
        textured = texture_engine.generate_texture(job, shape)
        timings["texture"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        report("export", 0.0, "writing files")
        encoded, orm = write_maps(textured.maps, staging)
        mesh = plan.mesh
        # The file's own arrays, not the texturer's camera-frame copy: nothing is moved or re-indexed.
        vertices = mesh.vertices[plan.vertex_map]
        normals = (mesh.normals if mesh.normals is not None else
                   smooth_vertex_normals(mesh.vertices, mesh.faces))[plan.vertex_map]
        unused = np.linalg.norm(normals, axis=1) < 1e-9     # vertices no face uses: any unit normal
        normals[unused] = (0.0, 1.0, 0.0)
        export.write_glb(os.path.join(staging, MESH_FILE), vertices, plan.faces, normals, plan.uvs,
                         {"albedo": encoded["albedo"], "normal": encoded["normal"], "orm": orm},
                         name="gen3d_%s" % job_id, uvs_kept=plan.uvs_kept)
        timings["export"] = time.perf_counter() - t0
        timings["upload"] = 0.0
        timings["total"] = time.perf_counter() - started
        summary = dict(mesh_summary(vertices, plan.faces), given=plan.record)
        return build_manifest(staging, job_id, job.request, None, texture_engine.name, summary, timings,
                              devices.describe(self.device), 0.0, frame=GIVEN_FRAME,
                              view=mesh_view.view_record(job.request.mesh_view), foreground=job.foreground,
                              warnings=job.warnings)

    def _oom_message(self, exc, stage):
        if self.device.type == "cuda":
            free = self.memory.free_gb()
            total = self.memory.total_gb()
            return ("The GPU ran out of memory during %s (%.1f of %.1f GB free). Lower face_count, texture_size "
                    "or octree_resolution, use texture_engine 'builtin', or close other GPU programs." %
                    (stage, free, total))
        return ("The computer ran out of memory during %s. Lower face_count or texture_size and try again." % stage)

    def _run(self, request, staging, job_id, tracker, cancel):
        torch.manual_seed(request.seed)
        np.random.seed(request.seed % (2 ** 32))
        cv2.setRNGSeed(request.seed % (2 ** 31))
        timings = {}
        started = time.perf_counter()

        def report(stage, fraction, message=""):
            if cancel.is_set():
                raise Gen3DError(CANCELLED, "The job was cancelled.", stage=stage, retryable=False)
            tracker.update(stage, fraction, message)

        check_multiview(request)
        # With a given mesh the shape stage is skipped (no shape engine is loaded or even needed).
        shape_engine = None if request.has_mesh else self.registry.get(request.engine, SHAPE)
        texture_name = request.effective_texture_engine
        texture_engine = self.registry.get(texture_name, TEXTURE) if texture_name else None
        if request.has_mesh and TEXTURE_EXISTING not in texture_engine.capabilities:
            raise Gen3DError(INVALID_INPUT, "The texture engine %s cannot paint a given mesh; use one of %s."
                             % (texture_name, ", ".join(TEXTURE_EXISTING_ENGINES)), stage="queued",
                             retryable=False)

        # Preprocess: decode, find the object, frame it.
        t0 = time.perf_counter()
        report("preprocess", 0.0, "reading the image")
        pixels, has_alpha = imageio.open_image(load_source(request, cancel))
        report("preprocess", 0.3, "finding the object")
        rgba, cut_record = foreground.foreground_with_record(
            pixels, has_alpha, request.remove_background, request.seed, check=lambda: report("preprocess", 0.3),
            cut_out=getattr(shape_engine or texture_engine, "cut_out", None))
        warnings = [w for w in [foreground.unsure_warning(cut_record)] if w]
        framed, info = foreground.frame(rgba)
        framing = {"front": info}
        with open(os.path.join(staging, INPUT_FILE), "wb") as handle:
            handle.write(export.encode_png(framed))
        views = {}
        for index, (view_name, source) in enumerate(sorted((request.views or {}).items())):
            # Each view is cut out and framed like the front; the engine registers them to each other.
            report("preprocess", 0.5 + 0.4 * index / len(request.views), "reading the %s view" % view_name)
            try:
                view_pixels, view_alpha = imageio.open_image(_load(source, cancel))
                view_rgba, view_record = foreground.foreground_with_record(
                    view_pixels, view_alpha, request.remove_background, request.seed,
                    check=lambda: report("preprocess", 0.5),
                    cut_out=getattr(shape_engine or texture_engine, "cut_out", None))
                cut_record.setdefault("views", {})[view_name] = view_record
                warnings += [w for w in [foreground.unsure_warning(view_record, "the %s view" % view_name)] if w]
                views[view_name], framing[view_name] = foreground.frame(view_rgba)
            except Gen3DError as exc:
                exc.message = "The %s view: %s" % (view_name, exc.message)
                raise
            with open(os.path.join(staging, view_file(view_name)), "wb") as handle:
                handle.write(export.encode_png(views[view_name]))
        plan = None
        if request.has_mesh:
            report("preprocess", 0.6, "reading the mesh")
            plan = given_mesh.plan(given_mesh.read_mesh(load_mesh_source(request, cancel)), request.mesh_view,
                                   request.texture_size)
        timings["preprocess"] = time.perf_counter() - t0

        job = JobContext(request, framed, self.device, staging, report, cancel, views=views,
                         foreground=cut_record, warnings=warnings, framing=framing)
        if plan is not None:
            return self._texture_given(job, plan, texture_engine, staging, job_id, timings, started, report)
        t0 = time.perf_counter()
        report("shape", 0.0, "building the shape with %s" % shape_engine.name)
        self.memory.prepare(self.registry, shape_engine, SHAPE)
        shape = shape_engine.generate_shape(job)
        timings["shape"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        textured = None
        if texture_engine is not None:
            report("texture", 0.0, "painting with %s" % texture_engine.name)
            self.memory.prepare(self.registry, texture_engine, TEXTURE)
            textured = texture_engine.generate_texture(job, shape)
        timings["texture"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        report("export", 0.0, "writing files")
        name = "gen3d_%s" % job_id
        elevation = float(getattr(shape, "elevation_deg", 0.0) or 0.0)
        if textured is not None:
            encoded, orm = write_maps(textured.maps, staging)
            normals = textured.normals if textured.normals is not None else \
                smooth_vertex_normals(textured.vertices, textured.faces)
            # After texturing: the rotation is rigid, so UVs and the tangent-space normal map stay valid.
            vertices, normals = upright.to_upright(textured.vertices, normals, elevation)
            faces = textured.faces
            export.write_glb(os.path.join(staging, MESH_FILE), vertices, faces, normals,
                             textured.uvs, {"albedo": encoded["albedo"], "normal": encoded["normal"], "orm": orm},
                             name=name)
        else:
            vertices, _ = upright.to_upright(shape.vertices, None, elevation)
            faces = shape.faces
            normals = smooth_vertex_normals(vertices, faces)
            export.write_glb(os.path.join(staging, MESH_FILE), vertices, faces, normals, name=name)
        # OBJ / PLY when asked for: the GLB's very arrays, in the same upright frame.
        export_formats.write_formats(staging, job.request.formats, vertices, faces, normals,
                                     textured.uvs if textured is not None else None,
                                     textured.maps["albedo"] if textured is not None else None, name=name)
        report("export", 0.9, "manifest")
        timings["export"] = time.perf_counter() - t0
        timings["upload"] = 0.0
        timings["total"] = time.perf_counter() - started
        # job.request: the engines fill null fields with the values they used (meta.json records those).
        return build_manifest(staging, job_id, job.request, shape_engine.name,
                              texture_engine.name if texture_engine else None, mesh_summary(vertices, faces),
                              timings, devices.describe(self.device), 0.0, frame=upright.FRAME,
                              view=upright.view_record(0.0, elevation), foreground=job.foreground,
                              warnings=job.warnings)
