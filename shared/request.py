"""The job request: wire names, defaults, ranges and validation (DESIGN.md, "The job contract").

Pure stdlib so that it runs inside Blender's Python, the local worker and the remote server alike.
"""

import base64
import binascii
import json
import struct
from collections import namedtuple
from dataclasses import asdict, dataclass, fields, replace

from .errors import IMAGE_TOO_LARGE, Gen3DError, invalid
from .version import API_VERSION

SHAPE_ENGINES = ("builtin", "hunyuan3d-2.1", "hunyuan3d-2", "hunyuan3d-2mini", "hunyuan3d-2mv")
# Engines that can paint a texture; any of them can texture any shape engine's mesh.
TEXTURE_ENGINES = ("builtin", "hunyuan3d-2.1", "hunyuan3d-2", "hunyuan3d-2mv")

# What people see the engines called (menus, docs); the wire uses the ids.
ENGINE_LABELS = {"builtin": "Built-in", "hunyuan3d-2.1": "Hunyuan3D 2.1", "hunyuan3d-2": "Hunyuan3D 2",
                 "hunyuan3d-2mini": "Hunyuan3D 2 mini", "hunyuan3d-2mv": "Hunyuan3D 2 multi-view"}
# Engines without a diffusion sampler: they ignore num_inference_steps and guidance_scale.
SAMPLERLESS_ENGINES = ("builtin",)

IMAGE_FIELDS = ("image", "image_url", "image_path")
# Extra views of the object (DESIGN.md "Coordinates"): the camera circled about the vertical axis at
# the front's elevation, by this azimuth (degrees).
VIEW_AZIMUTHS = {"right": 90.0, "back": 180.0, "left": 270.0}
VIEW_NAMES = tuple(VIEW_AZIMUTHS)
# Leading bytes of the image formats a base64 view may hold (to tell base64 text from a path).
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"RIFF", b"GIF8")
# Mesh files a job can write. Every result has the GLB (the add-on imports it, meta.json's mesh.file
# names it); obj and ply are extra copies of the same mesh. usdz needs Blender's USD exporter, so
# only the add-on's batch writes it (bpy stays out of the backends).
MESH_FORMATS = ("glb", "obj", "ply")
ADDON_FORMATS = ("usdz",)
# Texturing a given mesh (DESIGN.md "Texturing an existing mesh"): at most one of these, GLB or OBJ.
MESH_FIELDS = ("mesh", "mesh_url", "mesh_path")
INPUT_MESH_FORMATS = ("glb", "obj")   # what a given mesh may be
# Engines that can paint a given mesh (capability texture_existing; tests check the engines agree).
TEXTURE_EXISTING_ENGINES = ("builtin", "hunyuan3d-2.1", "hunyuan3d-2")
MAX_MESH_BYTES = 64 * 1024 * 1024     # ~1M triangles as OBJ text
MAX_MESH_FACES = 1000000
MESH_VIEW_PROJECTIONS = ("ortho", "persp")
# Quality presets: each engine picks its model variant and step count for them (null = balanced); a
# preset also fills the fields below when the request leaves them out.
PRESETS = ("fast", "balanced", "high")
PRESET_FIELDS = {"high": {"octree_resolution": 384}}
# Fields whose null means "the engine's own tuned value"; meta.json records the value used.
NULLABLE = ("num_inference_steps",)
# A base64 payload larger than this cannot be a sane input image (64 MP are caught after decoding).
MAX_IMAGE_BYTES = 64 * 1024 * 1024

class NumberField(namedtuple("NumberField", "kind default low high label help")):
    """One numeric request field: type, default, inclusive range, a short label and what it does.
    The CLI's --help, the add-on's properties and validation all read this one table."""

    def describe_range(self):
        return "%s..%s" % (self.low, self.high) if self.kind is int else "%g..%g" % (self.low, self.high)


NUMERIC_FIELDS = {
    "seed": NumberField(int, 1234, 0, 2 ** 32 - 1, "Seed",
                        "random seed: the same seed and inputs give the same result"),
    "octree_resolution": NumberField(int, 256, 64, 512, "Octree resolution",
                                     "resolution of the shape's sampling grid (builtin: its upper bound)"),
    "num_inference_steps": NumberField(int, None, 1, 100, "Steps",
                                       "diffusion steps of a model engine (e.g. 50, or 5 for a turbo model; the builtin "
                                       "engine ignores it)"),
    "guidance_scale": NumberField(float, 5.0, 0.1, 20.0, "Guidance",
                                  "how closely a model engine follows the image (the builtin engine ignores it)"),
    "face_count": NumberField(int, 40000, 1000, 200000, "Faces", "target triangle count"),
    "texture_size": NumberField(int, 1024, 256, 4096, "Texture size",
                                "texture width and height in pixels, a power of two"),
}
# name: (type, default, low, high), the older view of the same table
_NUMERIC = {name: tuple(field[:4]) for name, field in NUMERIC_FIELDS.items()}

# name: (default, low, high), for user interfaces that need the ranges up front
RANGES = {name: spec[1:] for name, spec in _NUMERIC.items()}


@dataclass(frozen=True)
class JobRequest:
    """A validated request. `image` holds base64 text exactly as it came over the wire."""

    api_version: str = API_VERSION
    image: str = None
    image_url: str = None
    image_path: str = None
    views: dict = None            # {"right"|"back"|"left": {"image"|"image_url"|"image_path": value}}
    engine: str = "builtin"
    texture_engine: str = None
    remove_background: bool = True
    texture: bool = True
    preset: str = None
    seed: int = NUMERIC_FIELDS["seed"].default
    octree_resolution: int = NUMERIC_FIELDS["octree_resolution"].default
    num_inference_steps: int = NUMERIC_FIELDS["num_inference_steps"].default
    guidance_scale: float = NUMERIC_FIELDS["guidance_scale"].default
    face_count: int = NUMERIC_FIELDS["face_count"].default
    texture_size: int = NUMERIC_FIELDS["texture_size"].default
    formats: tuple = ("glb",)
    mesh: str = None
    mesh_url: str = None
    mesh_path: str = None
    mesh_view: dict = None

    @property
    def has_mesh(self):
        return any(getattr(self, key) for key in MESH_FIELDS)

    def mesh_bytes(self):
        """Decoded bytes of an inline base64 mesh."""
        return decode_base64_mesh(self.mesh)

    @property
    def effective_texture_engine(self):
        """The engine that paints: the one asked for, else the shape engine if it can, else builtin.

        None when the request asks for an untextured mesh."""
        if not self.texture:
            return None
        if self.texture_engine:
            return self.texture_engine
        return self.engine if self.engine in TEXTURE_ENGINES else "builtin"

    def image_bytes(self):
        """Decoded bytes of an inline base64 image (data: URLs accepted)."""
        return decode_base64_image(self.image)

    def to_dict(self, include_image=True):
        data = asdict(self)
        if not include_image:
            data["image"] = "<%d base64 characters>" % len(self.image) if self.image else None
            if self.views:
                data["views"] = {name: {key: ("<%d base64 characters>" % len(value) if key == "image" else value)
                                        for key, value in source.items()} for name, source in self.views.items()}
            data["mesh"] = "<%d base64 characters>" % len(self.mesh) if self.mesh else None
        return {k: v for k, v in data.items() if v is not None or k == "texture_engine"}

    def effective_params(self):
        """What meta.json records under `params`: every field that shapes the output."""
        data = asdict(self)
        for key in IMAGE_FIELDS + MESH_FIELDS + ("api_version",):
            data.pop(key)
        data["views"] = sorted(self.views) if self.views else None
        if data["mesh_view"] is None:
            data.pop("mesh_view")
        data["texture_engine"] = self.effective_texture_engine
        data["formats"] = list(self.formats)      # as meta.json holds it (JSON has no tuples)
        return data

    def with_changes(self, **changes):
        return parse_request(dict(asdict(replace(self, **changes))), allow_path=True)


_FIELD_NAMES = tuple(f.name for f in fields(JobRequest))


def decode_base64_image(text):
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise Gen3DError(IMAGE_TOO_LARGE, "The image is over %d MB. Send a smaller image (at most "
                         "64 megapixels)." % (MAX_IMAGE_BYTES // 2 ** 20), stage="queued", retryable=False)
    if any(ch in text for ch in " \t\r\n"):     # MIME-style base64 wraps its lines
        text = "".join(text.split())
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("image", "is not valid base64; send the PNG, JPEG or WebP file's bytes base64-encoded")


def inline_image_size(request):
    """Characters of base64 image text the request carries (the main image and its views): what
    remote quotas count."""
    size = len(request.image or "")
    for source in (request.views or {}).values():
        size += len(source.get("image") or "")
    return size


def decode_base64_mesh(text):
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > MAX_MESH_BYTES * 4 // 3 + 4:
        raise invalid("mesh", "is over %d MB; send a smaller mesh" % (MAX_MESH_BYTES // 2 ** 20))
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise invalid("mesh", "is not valid base64; send the GLB or OBJ file's bytes base64-encoded")
    if mesh_format(data) is None:
        raise invalid("mesh", "is neither a GLB (binary glTF) nor an OBJ file")
    return data


def mesh_format(data):
    """'glb' or 'obj' from a file's first bytes, None when it is neither. An OBJ is text with a vertex
    line ("v x y z") among its first 64 KB."""
    head = bytes(data[:65536])
    if head[:4] == b"glTF":
        return "glb"
    if b"\0" in head:
        return None
    lines = head.decode("utf-8", errors="ignore").splitlines()
    if any(line.startswith("v ") or line.startswith("v\t") for line in lines):
        return "obj"
    return None


def glb_chunks(data, end=None):
    """(JSON document or None, BIN chunk bytes) of a GLB's bytes, its chunks read up to `end` (default: the
    end of `data`). The backend's given-mesh reader and the add-on's result-UV reader both split a GLB
    here, so the two read the container the same way; each checks what it needs of the header itself."""
    offset, document, blob = 12, None, b""
    end = len(data) if end is None else end
    while offset < end:
        length, kind = struct.unpack_from("<II", data, offset)
        body = data[offset + 8:offset + 8 + length]
        if kind == 0x4E4F534A:        # "JSON"
            document = json.loads(body.decode("utf-8"))
        elif kind == 0x004E4942:      # "BIN\0"
            blob = body
        offset += 8 + length
    return document, blob


def _finite_number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or \
            value in (float("inf"), float("-inf")):
        raise invalid(name, "must be a finite number, got %r" % (value,))
    return float(value)


def check_mesh_view(value):
    """null, {"azimuth_deg", "elevation_deg"} or {"view_matrix", "projection", "ortho_scale"|"fov_deg"};
    returns the normalised dict (floats, defaults filled) or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid("mesh_view", "must be an object such as {\"azimuth_deg\": 0, \"elevation_deg\": 10}")
    if "view_matrix" in value:
        allowed = {"view_matrix", "projection", "ortho_scale", "fov_deg"}
        extra = sorted(set(value) - allowed)
        if extra:
            raise invalid("mesh_view." + extra[0], "is not known with a view_matrix (known: %s)" % ", ".join(sorted(allowed)))
        matrix = value["view_matrix"]
        if not isinstance(matrix, (list, tuple)) or len(matrix) != 4 or \
                not all(isinstance(row, (list, tuple)) and len(row) == 4 for row in matrix):
            raise invalid("mesh_view.view_matrix", "must be a 4x4 list of rows (world-to-camera, camera looking down -Z)")
        rows = [[_finite_number("mesh_view.view_matrix", x) for x in row] for row in matrix]
        if rows[3] != [0.0, 0.0, 0.0, 1.0]:
            raise invalid("mesh_view.view_matrix", "must be a rigid transform whose last row is [0, 0, 0, 1]")
        projection = value.get("projection", "ortho")
        if projection not in MESH_VIEW_PROJECTIONS:
            raise invalid("mesh_view.projection", "must be 'ortho' or 'persp', got %r" % (projection,))
        out = {"view_matrix": rows, "projection": projection}
        if projection == "ortho":
            if "fov_deg" in value:
                raise invalid("mesh_view.fov_deg", "goes with projection 'persp'; an 'ortho' view takes ortho_scale")
            if value.get("ortho_scale") is not None:
                scale = _finite_number("mesh_view.ortho_scale", value["ortho_scale"])
                if scale <= 0:
                    raise invalid("mesh_view.ortho_scale", "must be above 0 (the view's width in mesh units)")
                out["ortho_scale"] = scale
        else:
            if "ortho_scale" in value:
                raise invalid("mesh_view.ortho_scale", "goes with projection 'ortho'; a 'persp' view takes fov_deg")
            fov = _finite_number("mesh_view.fov_deg", value.get("fov_deg", 50.0))
            if not 1.0 <= fov <= 170.0:
                raise invalid("mesh_view.fov_deg", "must be between 1 and 170 degrees, got %r" % fov)
            out["fov_deg"] = fov
        return out
    extra = sorted(set(value) - {"azimuth_deg", "elevation_deg"})
    if extra:
        raise invalid("mesh_view." + extra[0], "is not known (give azimuth_deg and elevation_deg, or a view_matrix)")
    azimuth = _finite_number("mesh_view.azimuth_deg", value.get("azimuth_deg", 0.0))
    elevation = _finite_number("mesh_view.elevation_deg", value.get("elevation_deg", 0.0))
    if not -360.0 <= azimuth <= 360.0:
        raise invalid("mesh_view.azimuth_deg", "must be between -360 and 360, got %r" % azimuth)
    if not -89.0 <= elevation <= 89.0:
        raise invalid("mesh_view.elevation_deg", "must be between -89 and 89, got %r" % elevation)
    return {"azimuth_deg": azimuth, "elevation_deg": elevation}


def _check_mesh_source(data, allow_path):
    given = [k for k in MESH_FIELDS if data.get(k) not in (None, "")]
    if not given:
        if data.get("mesh_view") is not None:
            raise invalid("mesh_view", "needs a mesh (mesh, mesh_url or mesh_path) to place the camera against")
        return {}
    key, value = _one_source(data, given, "mesh", decode_base64_mesh, allow_path,
                             "send the mesh itself (base64 'mesh') or a 'mesh_url' to a remote endpoint")
    if key == "mesh_path" and value.rsplit(".", 1)[-1].lower() not in INPUT_MESH_FORMATS:
        raise invalid("mesh_path", "must name a .glb or .obj file, got %r" % value)
    return {key: value, "mesh_view": check_mesh_view(data.get("mesh_view"))}


def _check_api_version(value):
    if not isinstance(value, str) or not value.strip():
        raise invalid("api_version", "must be a version string such as \"1\"")
    major = value.strip().split(".")[0]
    if major != API_VERSION:
        raise invalid("api_version", "%r is not supported; this Gen3D speaks API version %s. "
                      "Update the add-on or the server so both match" % (value, API_VERSION))
    return value.strip()


def check_number(name, value):
    kind, _default, low, high = _NUMERIC[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(name, "must be a number, got %s" % type(value).__name__)
    if kind is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise invalid(name, "must be a whole number, got %r" % value)
            value = int(value)
    else:
        value = float(value)
        if value != value:  # NaN
            raise invalid(name, "must be a number, got NaN")
    if not low <= value <= high:
        raise invalid(name, "must be between %s and %s, got %r" % (low, high, value))
    return value


def _check_choice(name, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise invalid(name, "must be one of %s, got %r" % (", ".join(choices), value))
    return value


def _check_image_source(data, allow_path):
    given = [k for k in IMAGE_FIELDS if data.get(k) not in (None, "")]
    if not given:
        raise invalid("image", "is missing: give one of image (base64), image_url or image_path")
    key, value = _one_source(data, given, "image", decode_base64_image, allow_path,
                             "send the image itself (base64 'image') or an 'image_url' to a remote endpoint")
    return {key: value}


def _one_source(data, given, noun, decode, allow_path, remote_hint):
    """The one given field of `noun`, `noun`_url, `noun`_path: a string, base64 that decodes, an http(s)
    URL, or a path (local backend only). Returns (field, value)."""
    if len(given) > 1:
        raise invalid(given[1], "cannot be combined with '%s'; give exactly one %s source" % (given[0], noun))
    key = given[0]
    value = data[key]
    if not isinstance(value, str):
        raise invalid(key, "must be a string")
    if key == noun:
        decode(value)
    elif key == noun + "_url":
        scheme = value.split(":", 1)[0].lower() if ":" in value else ""
        if scheme not in ("http", "https"):
            raise invalid(key, "must be an http or https URL")
    elif not allow_path:
        raise invalid(key, "is only accepted by the local backend; " + remote_hint)
    return key, value


def _view_source(name, value, allow_path):
    """One view, as the main image: {"image"|"image_url"|"image_path": value}. A plain string is
    taken as an http(s) URL, a data: URL or base64 image text, else (local backend) a file path."""
    field = "views.%s" % name
    if isinstance(value, dict):
        given = [k for k in IMAGE_FIELDS if value.get(k) not in (None, "")]
        extra = sorted(set(value) - set(IMAGE_FIELDS))
        if extra or len(given) != 1:
            raise invalid(field, "must be an image (base64, URL or path) or an object with exactly one of "
                          "image, image_url, image_path")
        key = given[0]
        value = value[key]
    elif isinstance(value, str) and value:
        key = _guess_source(value, allow_path)
    else:
        raise invalid(field, "must be an image: base64 text, an http(s) URL or (local backend) a file path")
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    if key == "image":
        try:
            decode_base64_image(value)
        except Gen3DError as exc:
            if exc.code == IMAGE_TOO_LARGE:
                raise
            raise invalid(field, "is not valid base64; send the PNG, JPEG or WebP file's bytes base64-encoded")
    elif key == "image_url":
        if value.split(":", 1)[0].lower() not in ("http", "https"):
            raise invalid(field, "must be an http or https URL")
    elif not allow_path:
        raise invalid(field, "is a file path, which only the local backend accepts; send the image itself "
                      "(base64) or an http(s) URL to a remote endpoint")
    return {key: value}


def _guess_source(text, allow_path):
    lowered = text[:8].lower()
    if lowered.startswith(("http://", "https://")):
        return "image_url"
    if lowered.startswith("data:"):
        return "image"
    head = text[:16]
    try:
        start = base64.b64decode(head[:len(head) // 4 * 4], validate=True)
    except (binascii.Error, ValueError):
        start = b""
    if start.startswith(_IMAGE_MAGIC):
        return "image"
    return "image_path" if allow_path else "image"


def _check_views(value, allow_path):
    if value is None or value == {}:
        return None
    if not isinstance(value, dict):
        raise invalid("views", "must be an object such as {\"back\": image}; names: %s" % ", ".join(VIEW_NAMES))
    unknown = sorted(set(value) - set(VIEW_NAMES))
    if unknown:
        raise invalid("views", "has an unknown view %r; the extra views are %s (the main image is the front)"
                      % (unknown[0], ", ".join(VIEW_NAMES)))
    return {name: _view_source(name, value[name], allow_path) for name in VIEW_NAMES if name in value}
def _check_formats(value):
    """A list of format names -> a tuple in MESH_FORMATS order, glb always first."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise invalid("formats", "must be a list of format names such as [\"glb\", \"obj\"], got %r" % (value,))
    for name in value:
        if name in ADDON_FORMATS:
            raise invalid("formats", "cannot hold %r here: Blender's USD exporter writes it, so only the "
                          "add-on does, not the backend. Run `blender -b -P blender_addon/batch.py -- IMAGE --out "
                          "DIR --format usdz`, or import the GLB in Blender and use File > Export > Universal "
                          "Scene Description" % name)
        if not isinstance(name, str) or name not in MESH_FORMATS:
            raise invalid("formats", "must name formats among %s (usdz through the add-on), got %r"
                          % (", ".join(MESH_FORMATS), name))
    return tuple(name for name in MESH_FORMATS if name == "glb" or name in value)


def parse_request(data, allow_path=True):
    """Validate a wire request (a dict) and fill in defaults. Raises Gen3DError(INVALID_INPUT)."""
    if not isinstance(data, dict):
        raise invalid("request", "must be a JSON object")
    unknown = sorted(set(data) - set(_FIELD_NAMES))
    if unknown:
        raise invalid(unknown[0], "is not a known request field (known: %s)" % ", ".join(_FIELD_NAMES))

    values = {"api_version": _check_api_version(data.get("api_version", API_VERSION))}
    values.update(_check_image_source(data, allow_path))
    values["views"] = _check_views(data.get("views"), allow_path)
    values["engine"] = _check_choice("engine", data.get("engine", "builtin"), SHAPE_ENGINES)
    texture_engine = data.get("texture_engine")
    if texture_engine is not None:
        values["texture_engine"] = _check_choice("texture_engine", texture_engine, TEXTURE_ENGINES)
    for flag in ("remove_background", "texture"):
        value = data.get(flag, True)
        if not isinstance(value, bool):
            raise invalid(flag, "must be true or false, got %r" % (value,))
        values[flag] = value
    preset = data.get("preset")
    if preset is not None:
        values["preset"] = _check_choice("preset", preset, PRESETS)
    preset_fields = PRESET_FIELDS.get(preset, {})
    for name, spec in _NUMERIC.items():
        value = data.get(name, preset_fields.get(name, spec[1]))
        values[name] = None if value is None and name in NULLABLE else check_number(name, value)
    values["formats"] = _check_formats(data.get("formats", ["glb"]))
    size = values["texture_size"]
    if size & (size - 1):
        raise invalid("texture_size", "must be a power of two (256, 512, 1024, 2048 or 4096), got %d" % size)
    values.update(_check_mesh_source(data, allow_path))
    request = JobRequest(**values)
    if request.has_mesh:
        painter = request.effective_texture_engine
        if painter is None:
            raise invalid("texture", "is false, but a mesh was given to be textured; leave texture on, or "
                          "leave the mesh out to generate an untextured shape")
        if painter not in TEXTURE_EXISTING_ENGINES:
            raise invalid("texture_engine", "%r cannot paint a given mesh; use one of %s"
                          % (painter, ", ".join(TEXTURE_EXISTING_ENGINES)))
    return request

