"""What the Hunyuan3D engines share: where packages and weights are, offline loading, the library's mesh
frame, closing meshes, seeding, the per-job folder, GPU out-of-memory errors, background removal with
the library's remover, and the adapter skeleton (HunyuanEngine) both engine modules build on.

Nothing here imports a Hunyuan package at module level, so this file (and the engines) import on any
machine; the libraries are imported when a stage's model is first loaded.

Weights are looked up, never downloaded, in this order (first hit wins):
  1. $GEN3D_WEIGHTS_DIR (or the engine setting "weights_dir") / <org>/<name>  or  / <name>
  2. $HY3DGEN_MODELS (the libraries' own folder, default ~/.cache/hy3dgen) / <org>/<name>
  3. the Hugging Face cache: $HF_HUB_CACHE, $HUGGINGFACE_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub,
     models--<org>--<name>/snapshots/<revision> (refs/main first)
"""

import contextlib
import functools
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import shutil
import sys
import tempfile
import threading
import types
from dataclasses import dataclass

import numpy as np
import torch

from shared.errors import ENGINE_UNAVAILABLE, INTERNAL, OUT_OF_MEMORY, Gen3DError

from ..mesh_ops import clean_closed_mesh, decimate, normalize
from . import base
from . import hunyuan_specs as specs
from . import hunyuan_memory

WEIGHTS_ENV = "GEN3D_WEIGHTS_DIR"
REPO21_ENV = "GEN3D_HUNYUAN21_REPO"
GB = 1024 ** 3

# The libraries' marching cubes output is already in glTF axes: their own texture renderer puts the
# front camera (azimuth 0) on +Z looking down -Z with +Y up in the image (see HUNYUAN.md, "Frames").
# Kept as an explicit matrix so the conversion is one reviewed place.
LIBRARY_TO_OUTPUT = np.eye(3)

# CWD and tempfile.tempdir are process-wide; the libraries write scratch files into both.
_FOLDER_LOCK = threading.RLock()


# ---------------------------------------------------------------------------------------------------
# Settings and weight lookup


def setting(settings, key, env=None, default=None):
    """An engine setting: the settings dict wins, then the environment variable, then the default."""
    value = (settings or {}).get(key)
    if value in (None, "") and env:
        value = os.environ.get(env)
    return default if value in (None, "") else value


def hf_hub_cache():
    """The Hugging Face hub cache folder, as huggingface_hub itself resolves it."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return os.path.expanduser(os.environ[key])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "huggingface", "hub")


@dataclass(frozen=True)
class ModelFiles:
    """A model folder inside a Hugging Face repository. `files` must all exist in the folder; an entry
    "a|b" is satisfied by either file."""

    repo_id: str
    subfolder: str
    files: tuple
    what: str

    def complete_in(self, root):
        folder = os.path.join(root, self.subfolder) if self.subfolder else root
        return all(any(os.path.isfile(os.path.join(folder, name)) for name in entry.split("|"))
                   for entry in self.files)

    def describe_files(self):
        prefix = self.subfolder + "/" if self.subfolder else ""
        return ", ".join(prefix + entry.replace("|", " or ") for entry in self.files)


def candidate_roots(repo_id, settings=None):
    """Every folder that may hold a copy of `repo_id`, in lookup order."""
    org, _, name = repo_id.partition("/")
    roots = []
    weights = setting(settings, "weights_dir", WEIGHTS_ENV)
    if weights:
        weights = os.path.expanduser(weights)
        roots += [os.path.join(weights, org, name), os.path.join(weights, name)]
    library_dir = os.path.expanduser(os.environ.get("HY3DGEN_MODELS", "~/.cache/hy3dgen"))
    roots.append(os.path.join(library_dir, org, name))
    repo_cache = os.path.join(hf_hub_cache(), "models--%s--%s" % (org, name))
    snapshots = os.path.join(repo_cache, "snapshots")
    revisions = []
    try:
        with open(os.path.join(repo_cache, "refs", "main")) as handle:
            revisions.append(handle.read().strip())
    except OSError:
        pass
    if os.path.isdir(snapshots):
        others = sorted(os.listdir(snapshots), key=lambda rev: -os.path.getmtime(os.path.join(snapshots, rev)))
        revisions += [rev for rev in others if rev not in revisions]
    roots += [os.path.join(snapshots, rev) for rev in revisions] or [snapshots]
    return roots


def locate(model, settings=None):
    """(root folder holding the model, folders searched). root is None when no copy is complete."""
    searched = candidate_roots(model.repo_id, settings)
    for root in searched:
        if model.complete_in(root):
            return os.path.abspath(root), searched
    return None, searched


def weights_missing(model, searched, engine):
    """The sentence an unavailable engine gives for missing weights: what, which files, where, and the
    command that downloads them."""
    folders = sorted({(model.subfolder or entry.split("/")[0]) for entry in model.files})
    include = " ".join("--include '%s/*'" % folder for folder in folders) if "/" in "".join(model.files) or \
        model.subfolder else ""
    target = "/".join(part for part in (model.repo_id, model.subfolder) if part)
    return ("%s weights not found: need %s from the Hugging Face repository %s. Looked in: %s. Install them with "
            "`%s` (or `hf download %s %s --local-dir <folder>/%s`), or set %s to a folder holding %s."
            % (model.what, model.describe_files(), model.repo_id, "; ".join(searched), specs.install_command(engine),
               model.repo_id, include, model.repo_id, WEIGHTS_ENV, target)).replace("  ", " ")


def missing_modules(names, paths=None):
    """The module names that cannot be imported. Checks without importing (no torch/CUDA start-up);
    `paths` are extra folders searched first, as the engine will put them on sys.path."""
    missing = []
    for name in names:
        top = name.split(".")[0]
        found = paths and importlib.machinery.PathFinder.find_spec(top, list(paths))
        if not found:
            try:
                found = importlib.util.find_spec(top)
            except (ImportError, ValueError, AttributeError):   # e.g. sys.modules[top] is None: blocked
                found = None
        if not found:
            missing.append(name)
    return missing


def modules_missing(missing, engine):
    return "missing Python packages: %s (install them: %s)" % (
        ", ".join(specs.PIP_NAMES.get(name, name) for name in missing), specs.install_command(engine))


# ---------------------------------------------------------------------------------------------------
# Import the library's real module chain in a subprocess, cached

# Runs in a fresh interpreter: puts `paths` first on sys.path, stands in for `placeholders` that are not
# installed, imports each module of the chain ("module:function" also calls it) and prints one JSON
# line: {"ok": true} or the first failure, with ModuleNotFoundError.name and the library file that
# did the import.
_PROBE = r"""
import importlib, importlib.util, json, sys, traceback, types
chain, paths, placeholders = json.loads(sys.argv[1])
sys.path[:0] = paths
for name in placeholders:
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        sys.modules[name] = types.ModuleType(name)
result = {"ok": True}
for entry in chain:
    module, _, function = entry.partition(":")
    try:
        loaded = importlib.import_module(module)
        if function:
            getattr(loaded, function)()
    except BaseException as exc:
        frames = [f.filename for f in traceback.extract_tb(exc.__traceback__)
                  if any(f.filename.startswith(p) for p in paths) or "site-packages" in f.filename]
        result = {"ok": False, "module": entry, "type": type(exc).__name__, "error": str(exc)[:500],
                  "missing": getattr(exc, "name", None) if isinstance(exc, ImportError) else None,
                  "importer": frames[-1] if frames else None}
        break
sys.stdout.write("\nGEN3D-PROBE " + json.dumps(result) + "\n")
"""
PROBE_TIMEOUT = 600
_PROBE_CACHE = {}
_PROBE_LOCK = threading.Lock()


def probe_cache_file():
    folder = os.environ.get("GEN3D_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "gen3d")
    return os.path.join(folder, "import-probes.json")


def _mtime(path):
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def _probe_key(chain, paths, placeholders):
    """Changes when the interpreter, the library folders or the installed packages change: the mtimes of
    the folders, their subfolders and site-packages move when a module is added or removed (pip install,
    a new build)."""
    import hashlib
    import json
    import site
    import sysconfig

    packages = sorted({sysconfig.get_paths()[key] for key in ("purelib", "platlib")} |
                      set(getattr(site, "getsitepackages", lambda: [])()))
    watched = list(paths) + packages
    for folder in paths:                       # a rebuilt extension lands one level down (DifferentiableRenderer/)
        try:
            watched += sorted(entry.path for entry in os.scandir(folder) if entry.is_dir())
        except OSError:
            pass
    material = [sys.executable, _mtime(sys.executable), list(chain), list(paths), list(placeholders),
                [(folder, _mtime(folder)) for folder in watched]]
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()


def _read_probe_cache():
    import json

    try:
        with open(probe_cache_file()) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _write_probe_cache(key, result):
    import json

    path = probe_cache_file()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        cache = _read_probe_cache()
        cache[key] = result
        partial = "%s.%d.tmp" % (path, os.getpid())
        with open(partial, "w") as handle:
            json.dump(cache, handle)
        os.replace(partial, path)
    except OSError:      # a read-only home only costs the next process another probe
        pass


def probe_imports(chain, paths=(), placeholders=()):
    """Import the module chain in a fresh interpreter (so nothing of it stays in this process and a
    CUDA-less machine is fine). Returns the probe's dict; cached per interpreter, folders and their mtimes."""
    import json
    import subprocess

    key = _probe_key(chain, paths, placeholders)
    with _PROBE_LOCK:
        if key in _PROBE_CACHE:
            return _PROBE_CACHE[key]
        cached = _read_probe_cache().get(key)
        if cached is not None:
            _PROBE_CACHE[key] = cached
            return cached
        argument = json.dumps([list(chain), [os.path.abspath(p) for p in paths], list(placeholders)])
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        try:
            done = subprocess.run([sys.executable, "-c", _PROBE, argument], capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT, cwd=tempfile.gettempdir(), env=env)
            line = [row for row in done.stdout.splitlines() if row.startswith("GEN3D-PROBE ")]
            if line:
                result = json.loads(line[-1][len("GEN3D-PROBE "):])
            else:   # the interpreter died (a native extension crashing on import): not cached
                return {"ok": False, "module": chain[0] if chain else "", "type": "crash", "missing": None,
                        "importer": None, "error": "the import exited with code %s: %s" % (
                            done.returncode, (done.stderr or "").strip()[-400:])}
        except subprocess.TimeoutExpired:
            return {"ok": False, "module": chain[0] if chain else "", "type": "timeout", "missing": None,
                    "importer": None, "error": "importing took over %d s" % PROBE_TIMEOUT}
        _PROBE_CACHE[key] = result
        _write_probe_cache(key, result)
        return result


def import_chain_problem(engine, what, chain, paths=(), placeholders=(), hints=None):
    """"" when the chain imports; otherwise a sentence naming the missing package (from
    ModuleNotFoundError.name), the library file that imported it and the command that installs it."""
    result = probe_imports(chain, paths, placeholders)
    if result.get("ok"):
        return ""
    missing = result.get("missing")
    importer = result.get("importer")
    where = " (imported by %s)" % importer if importer else ""
    if missing:
        top = missing.split(".")[0]
        hint = (hints or {}).get(top) or "install it: %s" % specs.install_command(engine)
        return "%s cannot be imported: missing Python package %s%s; %s" % (
            what, specs.PIP_NAMES.get(top, top), where, hint)
    return "%s cannot be imported (%s in %s: %s%s); reinstall it: %s" % (
        what, result.get("type"), result.get("module"), result.get("error"), where, specs.install_command(engine))


@contextlib.contextmanager
def library_paths(paths):
    """Put the library folders first on sys.path (they use top-level names such as `utils`)."""
    added = [path for path in paths if path not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for path in added:
            if path in sys.path:
                sys.path.remove(path)


def import_library(module, what, paths=(), engine="ENGINE"):
    """Import a library module; a failure becomes ENGINE_UNAVAILABLE naming the missing module."""
    try:
        with library_paths(paths):
            return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise Gen3DError(ENGINE_UNAVAILABLE, "%s could not be imported (%s: %s; missing %s). Install the engine: "
                         "%s (see backend_local/engines/HUNYUAN.md)." % (
                             what, module, exc, specs.PIP_NAMES.get(missing.split(".")[0], missing),
                             specs.install_command(engine)), retryable=False)


@contextlib.contextmanager
def offline(local_repos):
    """Run library code that resolves weights through huggingface_hub.snapshot_download without any
    download: repository ids in `local_repos` (id -> folder) resolve to our folders, anything else fails
    with ENGINE_UNAVAILABLE. Also sets the hub's offline switches for code that reads them."""
    try:
        import huggingface_hub
    except ImportError:           # without the hub client the libraries cannot download either
        huggingface_hub = None
    original = huggingface_hub.snapshot_download if huggingface_hub else None

    def resolve(repo_id, *args, **kwargs):
        if repo_id in local_repos:
            return local_repos[repo_id]
        if os.path.isdir(str(repo_id)):
            return str(repo_id)
        raise Gen3DError(ENGINE_UNAVAILABLE, "The library asked to download %s; Gen3D never downloads weights. "
                         "Put them in %s or the Hugging Face cache." % (repo_id, WEIGHTS_ENV), retryable=False)

    saved_env = {key: os.environ.get(key) for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if huggingface_hub:
        huggingface_hub.snapshot_download = resolve
    try:
        yield
    finally:
        if huggingface_hub:
            huggingface_hub.snapshot_download = original
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def trusted_local_pipelines():
    """Let diffusers run the painters' own pipeline code from local folders while they load.

    Both painters call DiffusionPipeline.from_pretrained(<local weights folder>, custom_pipeline=<the library's
    own pipeline folder>); the weights folder's unet/ holds the custom UNet's module file, as released. Newer
    diffusers refuse local custom code unless trust_remote_code=True, which the libraries do not pass (so
    they fail to load at all). While this is active a local folder is loaded with trust_remote_code=True;
    hub ids are untouched (and `offline` refuses them anyway). A diffusers without the switch is left as is.
    """
    try:
        import diffusers
        from diffusers.utils import dynamic_modules_utils
    except ImportError:
        yield
        return
    loader = getattr(dynamic_modules_utils, "get_cached_module_file", None)
    if loader is None or "trust_remote_code" not in inspect.signature(loader).parameters:
        yield
        return
    owner = diffusers.DiffusionPipeline
    original = owner.__dict__["from_pretrained"]
    function = original.__func__

    @functools.wraps(function)
    def from_pretrained(cls, path, *args, **kwargs):
        if os.path.isdir(str(path)):
            kwargs.setdefault("trust_remote_code", True)
        return function(cls, path, *args, **kwargs)

    owner.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        owner.from_pretrained = original


class _Placeholder(types.ModuleType):
    """Stands in for a module the library imports at the top but that Gen3D's calls never use."""

    def __init__(self, name, why):
        super().__init__(name)
        self._why = why

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise RuntimeError("%s is not installed: %s" % (self.__name__, self._why))


@contextlib.contextmanager
def placeholder_modules(names, why):
    """While a library module is imported, put placeholders for `names` that are not installed into
    sys.modules (the library keeps its reference; sys.modules is cleaned afterwards). Using one raises a
    RuntimeError that says `why`."""
    added = {}
    for name in names:
        if name not in sys.modules and missing_modules([name]):
            added[name] = sys.modules[name] = _Placeholder(name, why)
    try:
        yield
    finally:
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


# ---------------------------------------------------------------------------------------------------
# Per-job folder, seeding, images


@contextlib.contextmanager
def job_folder(work_dir, name):
    """A scratch folder inside the job's folder that is the working directory and the temp directory
    while the library runs (it writes files next to the mesh, in the CWD and in /tmp without cleaning
    up). Serialised by a lock because both are process-wide; removed afterwards so nothing of it ends
    up among the job's results."""
    with _FOLDER_LOCK:
        folder = tempfile.mkdtemp(prefix=".%s-" % name, dir=work_dir)
        previous_cwd, previous_tmp = os.getcwd(), tempfile.tempdir
        os.chdir(folder)
        tempfile.tempdir = folder
        try:
            yield folder
        finally:
            os.chdir(previous_cwd)
            tempfile.tempdir = previous_tmp
            shutil.rmtree(folder, ignore_errors=True)


def seeded_generator(seed):
    """The generator the libraries draw their initial noise from. A CPU generator, as the libraries' own
    apps use: the same seed gives the same noise on CPU and on any GPU."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def on_device(device):
    """Make `device` the current CUDA device (the painters say just "cuda"); nothing on the CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def library_dtype(device, settings=None):
    """fp16 on CUDA as the released weights are, fp32 on CPU where half precision is slow or missing."""
    name = setting(settings, "dtype")
    if name:
        return getattr(torch, name)
    return torch.float16 if device.type == "cuda" else torch.float32


def pil_image(rgba):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(rgba), "RGBA")


def step_callback(job, stage, steps, start=0.05, end=0.8):
    """A diffusion-step callback for the libraries: reports progress and lets a cancel stop the loop."""

    def callback(step, _timestep, _outputs):
        job.progress(stage, start + (end - start) * min(step + 1, steps) / max(steps, 1),
                     "denoising step %d of %d" % (min(step + 1, steps), steps))

    return callback


# ---------------------------------------------------------------------------------------------------
# Meshes


def to_output_frame(vertices):
    """Library mesh frame -> ours: rotate (identity, see LIBRARY_TO_OUTPUT), centre, largest side 2."""
    rotated = np.asarray(vertices, dtype=np.float64) @ LIBRARY_TO_OUTPUT.T
    return normalize(rotated)[0]


def closed_mesh(vertices, faces, face_count):
    """A closed, outward-facing mesh of at most `face_count` triangles for the texturers.

    The libraries' marching cubes surfaces are closed unless the object touches the decoding box, and
    quadric reduction can open a seam now and then: holes are closed with a fan around their centre, and
    a surface that still has open or non-manifold edges is rebuilt as the boundary of its solid voxels.
    """
    mesh = _closed(clean_closed_mesh(np.asarray(vertices, np.float64), np.asarray(faces, np.int64)))
    if not mesh.is_watertight:
        mesh = _closed(_voxel_rebuild(mesh, face_count))
    target = face_count
    for _attempt in range(3):     # closing a seam the reduction opened adds a few faces: aim lower
        if len(mesh.faces) <= face_count:
            break
        reduced = _closed(clean_closed_mesh(*decimate(mesh.vertices, mesh.faces, target)))
        if len(reduced.faces) <= face_count:
            mesh = reduced
        target -= max(len(reduced.faces) - face_count, 0) + 2
    if not mesh.is_watertight or not 0 < len(mesh.faces) <= face_count:
        raise Gen3DError(INTERNAL, "The model's surface could not be closed; try another seed or a higher "
                         "octree_resolution.", stage="shape")
    return np.asarray(mesh.vertices), np.asarray(mesh.faces, dtype=np.int64)


def _closed(mesh):
    """Close every hole (a loop of boundary edges) with a fan of triangles around the loop's centre."""
    import trimesh

    if mesh.is_watertight:
        return mesh
    edges = mesh.edges                                       # directed, three per face, in winding order
    _unique, inverse, counts = np.unique(mesh.edges_sorted, axis=0, return_inverse=True, return_counts=True)
    boundary = edges[counts[inverse.ravel()] == 1]          # edges with a face on one side only
    if len(boundary) == 0:
        return mesh
    loops = trimesh.graph.connected_components(boundary, min_len=3)
    vertices, faces = [np.asarray(mesh.vertices)], [np.asarray(mesh.faces)]
    next_index = len(mesh.vertices)
    for loop in loops:
        loop_edges = boundary[np.isin(boundary[:, 0], loop)]
        vertices.append(mesh.vertices[loop].mean(axis=0, keepdims=True))
        faces.append(np.column_stack([loop_edges[:, 1], loop_edges[:, 0], np.full(len(loop_edges), next_index)]))
        next_index += 1
    return clean_closed_mesh(np.vstack(vertices), np.vstack(faces))


def _voxel_rebuild(mesh, face_count):
    """Surface of the filled voxelisation, at a grid whose surface has about face_count triangles."""
    import trimesh
    from skimage import measure

    resolution = int(np.clip(np.sqrt(face_count / 2.0), 48, 192))
    pitch = float(mesh.extents.max()) / resolution
    grid = mesh.voxelized(pitch).fill()
    solid = np.pad(grid.matrix.astype(np.float32), 1)
    verts, faces, _normals, _values = measure.marching_cubes(solid, 0.5)
    verts = trimesh.transform_points(verts - 1.0, grid.transform)
    return clean_closed_mesh(verts, faces)


# ---------------------------------------------------------------------------------------------------
# GPU memory


def is_out_of_memory(exc):
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def out_of_memory(exc, engine, stage, device):
    """OUT_OF_MEMORY with the numbers and what to change. Frees the cached blocks first so the worker
    can run the next job with what is left loaded."""
    need = float(engine.vram_gb.get(stage, 0.0))
    if device.type == "cuda":
        torch.cuda.empty_cache()
        from .. import vram_plan

        free, total = vram_plan.usable_bytes(device), torch.cuda.mem_get_info(device)[1]
        numbers = "%.1f GB free of %.1f GB after the failure; %s/%s needs about %.0f GB" % (
            free / GB, total / GB, engine.name, stage, need)
    else:
        numbers = "%s/%s on the CPU" % (engine.name, stage)
    if stage == "texture":
        advice = ("use texture_engine 'builtin' (no paint model), run the worker with --low-memory so the "
                  "shape model is unloaded first, lower texture_size, or close other GPU programs")
    else:
        advice = ("lower octree_resolution, run with --low-memory, use hunyuan3d-2mini (about 5 GB), or "
                  "close other GPU programs")
    return Gen3DError(OUT_OF_MEMORY, "The GPU ran out of memory in the %s stage (%s). To fix: %s." % (
        stage, numbers, advice), stage=stage, retryable=True)


class gpu_stage:
    """Turn a CUDA out-of-memory inside a stage into OUT_OF_MEMORY with numbers. The failed call's frames
    (which hold its activations) are cleared before the cache is emptied and the free memory read, so the
    numbers and the next job see the memory really free."""

    def __init__(self, engine, stage, device):
        self.engine, self.stage, self.device = engine, stage, device

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, Gen3DError) or not is_out_of_memory(exc):
            return False
        del tb
        text = hunyuan_memory.free_failure(exc)
        error = out_of_memory(text, self.engine, self.stage, self.device)
        error.__suppress_context__ = True
        raise error from None


def release_cuda():
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------------
# Background removal through the library's remover


def u2net_model_path():
    home = os.environ.get("U2NET_HOME", os.path.join(os.path.expanduser("~"), ".u2net"))
    return os.path.join(home, "u2net.onnx")


def library_cutout(remover_module, rgb, paths=()):
    """Alpha (uint8 H x W) from the library's BackgroundRemover (rembg, u2net), or None when rembg or its
    model file is not installed: the remover would download the model, which Gen3D never does."""
    if missing_modules(["rembg", "onnxruntime"]) or not os.path.isfile(u2net_model_path()):
        return None
    from PIL import Image

    module = import_library(remover_module, "The library's background remover", paths)
    cut = module.BackgroundRemover()(Image.fromarray(np.ascontiguousarray(rgb[..., :3]), "RGB"))
    return np.asarray(cut.convert("RGBA"), dtype=np.uint8)[..., 3]


# ---------------------------------------------------------------------------------------------------
# The adapter skeleton both Hunyuan engine modules share


class HunyuanEngine(hunyuan_memory.StageMemory, base.Engine):
    """Per-stage availability, lazy per-stage loading onto the job's device, unloading.

    Subclasses give `stage_problems(stage)` (what is missing for a stage, as sentences), `load_stage`
    (returns the loaded model), `remover_module` and `library_folders()`.
    """

    remover_module = ""
    painter_needs_cuda = True     # the libraries' painters rasterize with a CUDA-only extension

    def __init__(self, settings=None):
        super().__init__(settings)
        self._models = {}
        self._device = None

    def library_folders(self):
        return ()

    def painter_device_problem(self, device):
        if self.painter_needs_cuda and device.type != "cuda":
            return Gen3DError(ENGINE_UNAVAILABLE, "The %s painter runs on CUDA only; run the job with --device "
                              "cuda, or use texture_engine 'builtin'." % self.name, stage="texture", retryable=False)
        return None

    def cuda_problem(self):
        if self.painter_needs_cuda and not torch.cuda.is_available():
            return "the painter runs on CUDA only and this machine has no usable NVIDIA GPU"
        return ""

    def stage_problems(self, stage):
        raise NotImplementedError

    def load_stage(self, stage, device, variant=None):
        raise NotImplementedError

    def availability(self, stage=None):
        """One stage's availability; without a stage, the shape stage's, with the others in the reason."""
        # the stages only: the other capabilities (multiview, texture_existing) need nothing of their own
        problems = {name: "; ".join(self.stage_problems(name)) for name in (base.SHAPE, base.TEXTURE)
                    if name in self.capabilities}
        details = {name: {"available": not reason, "reason": reason} for name, reason in problems.items()}
        if stage is not None:
            reason = problems.get(stage, "%s has no %s stage" % (self.name, stage))
            return base.Availability(not reason, reason, details)
        reason = problems[base.SHAPE]
        if not reason:
            reason = "; ".join("%s stage unavailable: %s" % (name, why) for name, why in problems.items() if why)
            return base.Availability(True, reason, details)
        return base.Availability(False, reason, details)

    def model(self, stage, device, variant=None):
        """The stage's loaded model, loading it (once) onto `device`. `variant` (a preset's model) replaces
        a loaded model of another variant; None takes whatever is loaded, else the default."""
        if self._device is not None and self._device != device:
            self.unload()
        loaded = self._models.get(stage)
        current = getattr(loaded, "variant", variant)
        if loaded is not None and variant is not None and current != variant:
            if current.weights == variant.weights:     # same model, other step default (e.g. high): no reload
                loaded.variant = variant
            else:
                self.unload(stage)
        if stage not in self._models:
            problems = self.stage_problems(stage) + self.variant_problems(stage, variant)
            if problems:
                raise Gen3DError(ENGINE_UNAVAILABLE, "The engine '%s' cannot run its %s stage: %s" % (
                    self.name, stage, "; ".join(problems)), stage=stage, retryable=False)
            try:
                with gpu_stage(self, stage, device):
                    self._models[stage] = self.load_stage(stage, device, variant)
            except ModuleNotFoundError as exc:     # a lazy import inside the library's loader
                raise Gen3DError(ENGINE_UNAVAILABLE, "The engine '%s' cannot load its %s model: missing Python "
                                 "package %s (%s). Install it: %s" % (
                                     self.name, stage, specs.PIP_NAMES.get(str(exc.name).split(".")[0], exc.name),
                                     exc, specs.install_command(self.name)), stage=stage, retryable=False)
            self._device = device
            self._loaded.add(stage)
        self.bring_back(stage, device)
        return self._models[stage]

    def variant_problems(self, stage, variant):
        """What a non-default variant lacks beyond the stage's own needs (e.g. the turbo weights)."""
        return []

    def load(self, stage, device):
        self.model(stage, device)

    def unload(self, stage=None):
        for name in ([stage] if stage else list(self._models)):
            self._models.pop(name, None)
        self.forget_stage(stage)
        super().unload(stage)
        if not self._models:
            self._device = None
        release_cuda()

    def cut_out(self, rgb):
        """The library's background removal for an RGB image (alpha uint8), or None when it cannot run
        offline here; the pipeline then uses its own."""
        return library_cutout(self.remover_module, rgb, self.library_folders())
