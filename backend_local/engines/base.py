"""The engine adapter interface every shape/texture engine implements, and the job context it gets."""

import threading
from dataclasses import dataclass, field

import numpy as np

from shared.errors import CANCELLED, Gen3DError

SHAPE = "shape"
TEXTURE = "texture"
MULTIVIEW = "multiview"      # a capability, not a stage: the engine uses the request's `views`
TEXTURE_EXISTING = "texture_existing"   # paints a given mesh, keeping its vertices, faces and UVs


@dataclass
class Availability:
    available: bool
    reason: str = ""          # why not, naming what is missing and where it was looked for
    details: dict = field(default_factory=dict)


@dataclass
class ViewMapping:
    """Orthographic front view: output-frame point (x, y, z) -> input.png pixel (column, row).

    column = cx + x * scale, row = cy - y * scale; the camera looks down -Z, so larger z is nearer.
    """

    scale: float
    cx: float
    cy: float

    def to_pixels(self, xyz):
        xyz = np.asarray(xyz)
        return np.stack([self.cx + xyz[..., 0] * self.scale, self.cy - xyz[..., 1] * self.scale], axis=-1)


@dataclass
class ExtraView:
    """An extra view registered to a shape: output-frame point p is seen at
    mapping.to_pixels(rotation @ p) of `image`, with (rotation @ p).z growing toward that camera."""

    rotation: np.ndarray
    mapping: ViewMapping
    image: np.ndarray             # framed RGBA uint8 (input_<name>.png)


@dataclass
class ShapeResult:
    """A closed mesh (glTF axes, centred, largest side 2) in the input camera's frame: the camera looks
    down -Z from `elevation_deg` above the horizon. The pipeline takes that elevation out at export
    (backend_local/upright.py); an engine whose mesh is already upright leaves it at 0."""

    vertices: np.ndarray
    faces: np.ndarray
    view: ViewMapping = None      # None: the texturer aligns the mesh to the image itself
    detail: object = None         # engine-private data for its own texturer (e.g. a smooth field)
    elevation_deg: float = 0.0    # the input camera's elevation the engine assumed or estimated
    views: dict = None            # name -> ExtraView, for texturers that project every view
    # A given mesh's UVs, (vertex_map, faces, uvs): texturers bake into these instead of unwrapping
    # (DESIGN.md "Texturing an existing mesh"); None: the texturer makes its own.
    uv_layout: tuple = None
    normals: np.ndarray = None    # a given mesh's own vertex normals (None: smooth normals)


@dataclass
class TextureResult:
    """The textured mesh: split vertices with per-vertex UVs (glTF convention, v down) and the five maps."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    maps: dict                    # albedo RGB, normal RGB, roughness, metallic, ao: uint8 arrays
    normals: np.ndarray = None


class JobContext:
    """What an engine sees of a job: parameters, the framed input, device, progress and cancel."""

    def __init__(self, request, image, device, work_dir, report=None, cancel=None, views=None,
                 foreground=None, warnings=(), framing=None):
        self.request = request
        self.image = image            # framed RGBA uint8 (input.png)
        self.views = views or {}      # "right"/"back"/"left" -> framed RGBA uint8 (input_<name>.png)
        # "front" and each view's name -> foreground.frame's info (crop in the raw image, raw size), when
        # known: views taken with one camera can then be registered from where they were cut out.
        self.framing = framing
        self.device = device          # torch.device
        self.work_dir = work_dir      # a private scratch folder for this job
        self.foreground = foreground  # how the background was removed and how sure (meta.json `foreground`)
        self.warnings = list(warnings)  # plain-words doubts about the result (meta.json `warnings`)
        self._report = report
        self._cancel = cancel or threading.Event()

    def progress(self, stage, fraction, message=""):
        self.check_cancel()
        if self._report is not None:
            self._report(stage, fraction, message)

    def check_cancel(self):
        if self._cancel.is_set():
            raise Gen3DError(CANCELLED, "The job was cancelled.", retryable=False)

    @property
    def cancel_event(self):
        return self._cancel


class Engine:
    """Adapter base. Subclasses declare capabilities and VRAM need, and implement the stages.

    Models are loaded lazily per stage and kept until unload(); the pipeline decides when memory is
    short and calls unload() between stages or jobs.
    """

    name = ""
    capabilities = frozenset()
    vram_gb = {}                  # stage -> GB of GPU memory the stage needs with its model loaded

    def __init__(self, settings=None):
        self.settings = settings or {}
        self._loaded = set()

    def availability(self, stage=None):
        """Whether this engine (or one of its stages) can run here; the reason names what is missing."""
        return Availability(True)

    def loaded_stages(self):
        return set(self._loaded)

    def load(self, stage, device):
        self._loaded.add(stage)

    def unload(self, stage=None):
        if stage is None:
            self._loaded.clear()
        else:
            self._loaded.discard(stage)

    def generate_shape(self, job):
        raise NotImplementedError("%s has no shape stage" % self.name)

    def generate_texture(self, job, shape):
        raise NotImplementedError("%s has no texture stage" % self.name)


def fit_view(vertices, alpha):
    """Align a mesh from an engine with its own framing to the input image: match the bounding box of
    its front (orthographic) projection to the bounding box of the image's foreground."""
    solid = alpha > 127
    rows, cols = np.flatnonzero(solid.any(1)), np.flatnonzero(solid.any(0))
    width, height = cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]
    low, high = vertices[:, :2].min(0), vertices[:, :2].max(0)
    extent = np.maximum(high - low, 1e-9)
    scale = float(np.sqrt((width / extent[0]) * (height / extent[1])))
    cx = (cols[0] + cols[-1] + 1) / 2.0 - (low[0] + high[0]) / 2.0 * scale
    cy = (rows[0] + rows[-1] + 1) / 2.0 + (low[1] + high[1]) / 2.0 * scale
    return ViewMapping(scale=scale, cx=cx, cy=cy)
