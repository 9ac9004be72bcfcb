"""The result manifest (meta.json): write, read and verify, with sha256 per file."""

import hashlib
import json
import os

from .errors import INVALID_INPUT, Gen3DError
from .version import API_VERSION

MAP_NAMES = ("albedo", "normal", "roughness", "metallic", "ao")
MESH_FILE = "mesh.glb"
INPUT_FILE = "input.png"
META_FILE = "meta.json"
# The files each mesh format adds to a result (request field `formats`); the OBJ's MTL names the PNG maps.
FORMAT_FILES = {"glb": (MESH_FILE,), "obj": ("mesh.obj", "mesh.mtl"), "ply": ("mesh.ply",)}
TIMING_KEYS = ("preprocess", "shape", "texture", "export", "upload", "total")


def map_file(name):
    return "%s.png" % name


def result_files(textured, formats=("glb",)):
    """Every file a complete result holds besides meta.json."""
    names = [MESH_FILE, INPUT_FILE]
    if textured:
        names += [map_file(n) for n in MAP_NAMES]
    for name in formats:
        names += [file for file in FORMAT_FILES[name] if file not in names]
    return names


def format_files(formats):
    """meta.json's mesh.formats: {format: its main file}, e.g. {"glb": "mesh.glb", "obj": "mesh.obj"}."""
    return {name: FORMAT_FILES[name][0] for name in formats}


def sha256_file(path, chunk=1 << 20):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def describe_files(directory, names):
    return {name: {"bytes": os.path.getsize(os.path.join(directory, name)),
                   "sha256": sha256_file(os.path.join(directory, name))} for name in names}


def build_manifest(directory, job_id, request, shape_engine, texture_engine, mesh, timings,
                   device, peak_memory_mb, status="completed", frame="upright", view=None, foreground=None,
                   warnings=()):
    """`mesh` is {"vertices": int, "faces": int, "bounds": [[x,y,z],[x,y,z]]}; `view` is the input camera
    the engine assumed or estimated, {"azimuth_deg", "elevation_deg"} (default: the front, level).
    `foreground` says how the background was removed and how sure the cut-out is ({"method", "confidence",
    "unsure", "reasons"[, "views": {name: same}]}; None leaves it out); `warnings` are plain-words doubts
    about the result (an unsure cut-out), [] when there are none."""
    textured = texture_engine is not None
    formats = request.formats
    timings = {key: round(float(timings.get(key, 0.0)), 4) for key in TIMING_KEYS}
    return {
        "api_version": API_VERSION,
        "job_id": job_id,
        "status": status,
        "frame": frame,
        "view": dict(view) if view else {"azimuth_deg": 0.0, "elevation_deg": 0.0},
        "engine": {"shape": shape_engine, "texture": texture_engine},
        "params": request.effective_params(),
        "seed": request.seed,
        "mesh": dict(mesh, file=MESH_FILE, formats=format_files(formats)),
        "textures": {name: map_file(name) for name in MAP_NAMES} if textured else None,
        "files": describe_files(directory, result_files(textured, formats)),
        "timings": timings,
        "device": device,
        "peak_memory_mb": round(float(peak_memory_mb), 1),
        **({"foreground": foreground} if foreground is not None else {}),
        "warnings": [str(w) for w in warnings or ()],
    }


def write_json_atomic(path, data):
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_manifest(directory, manifest):
    write_json_atomic(os.path.join(directory, META_FILE), manifest)


_REQUIRED = ("api_version", "job_id", "status", "engine", "params", "seed", "mesh", "textures", "files",
             "timings", "device", "peak_memory_mb")


def read_manifest(path):
    """Read meta.json (a file path or the folder holding it) and check its shape."""
    if os.path.isdir(path):
        path = os.path.join(path, META_FILE)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        raise Gen3DError(INVALID_INPUT, "No meta.json at %s: this folder holds no finished Gen3D result." % path)
    except (OSError, ValueError) as exc:
        raise Gen3DError(INVALID_INPUT, "Cannot read %s (%s). The result may be damaged; generate it again." % (path, exc))
    return check_manifest(manifest, path)


def check_manifest(manifest, where="manifest"):
    missing = [key for key in _REQUIRED if not isinstance(manifest, dict) or key not in manifest]
    if missing:
        raise Gen3DError(INVALID_INPUT, "%s is not a Gen3D manifest (missing %s)." % (where, ", ".join(missing)))
    if str(manifest["api_version"]).split(".")[0] != API_VERSION:
        raise Gen3DError(INVALID_INPUT, "%s was written by an incompatible Gen3D (API %s)." % (where, manifest["api_version"]))
    return manifest


def verify_files(directory, manifest):
    """Names of files that are missing or whose size or sha256 differs from the manifest."""
    bad = []
    for name, info in manifest["files"].items():
        path = os.path.join(directory, name)
        if (not os.path.isfile(path) or os.path.getsize(path) != info["bytes"]
                or sha256_file(path) != info["sha256"]):
            bad.append(name)
    return bad
