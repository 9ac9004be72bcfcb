"""The Gen3D job contract: pure stdlib, importable from Blender, the worker and the server."""

from .errors import ERROR_CODES, Gen3DError
from .manifest import MAP_NAMES, read_manifest, verify_files, write_manifest
from .progress import STAGES, ProgressTracker, progress_event
from .request import SHAPE_ENGINES, TEXTURE_ENGINES, JobRequest, parse_request
from .version import API_VERSION, __version__

__all__ = [
    "API_VERSION", "ERROR_CODES", "Gen3DError", "JobRequest", "MAP_NAMES", "ProgressTracker", "SHAPE_ENGINES",
    "STAGES", "TEXTURE_ENGINES", "__version__", "parse_request", "progress_event", "read_manifest",
    "verify_files", "write_manifest",
]
