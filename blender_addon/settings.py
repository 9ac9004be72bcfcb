"""Plain settings objects the job code runs on (no bpy), and where their defaults come from.

The preferences (prefs.py) and the batch command line (batch.py) both turn into these, so the job
and import code never reads Blender's preferences itself.
"""

import os
from dataclasses import dataclass, fields

from .contract import SOURCE_ROOT

LOCAL = "LOCAL"
REMOTE = "REMOTE"
DEVICES = ("auto", "cpu", "cuda")

ENV_PYTHON = "GEN3D_PYTHON"
ENV_BACKEND_DIR = "GEN3D_BACKEND_DIR"


@dataclass(frozen=True)
class BackendSettings:
    """Where and how jobs run. Every path is absolute once resolve() has run."""

    backend: str = LOCAL            # LOCAL or REMOTE
    python: str = ""                # LOCAL: Python of the environment that has backend_local (torch etc.)
    backend_dir: str = ""           # LOCAL: project folder holding backend_local/; "" = python imports it already
    device: str = "auto"            # LOCAL: auto, cpu or cuda
    keep_models_loaded: bool = True  # LOCAL: False starts the worker with --low-memory
    remote_url: str = ""            # REMOTE: https://api.runpod.ai/v2/<endpoint> or a self-hosted server
    api_key: str = ""               # REMOTE: sent as "Authorization: Bearer <key>"
    output_dir: str = ""            # job folders go here; the worker log too
    online_access: bool = True      # Blender 4.2+ "Allow Online Access"; REMOTE is refused without it

    def resolve(self):
        """A copy with the environment and source-tree fallbacks filled in."""
        return BackendSettings(**dict(
            self.as_dict(),
            python=resolve_python(self.python),
            backend_dir=resolve_backend_dir(self.backend_dir),
            output_dir=os.path.abspath(os.path.expanduser(self.output_dir)) if self.output_dir else "",
        ))

    def as_dict(self):
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def client_key(self):
        """Settings that need a fresh client (a restarted worker, a new session) when they change."""
        if self.backend == LOCAL:
            return (LOCAL, self.python, self.backend_dir, self.device, self.keep_models_loaded, self.output_dir)
        return (self.backend, self.remote_url, self.api_key)


@dataclass(frozen=True)
class ImportSettings:
    place_at_cursor: bool = True
    target_size: float = 1.0        # largest side in scene units after import; 0 keeps the generated size (2)
    ao_into_base_color: bool = False
    pack_textures: bool = False     # store the maps in the .blend


def _venv_python(folder):
    for relative in (("bin", "python"), ("Scripts", "python.exe")):
        candidate = os.path.join(folder, ".venv", *relative)
        if os.path.isfile(candidate):
            return candidate
    return ""


def source_backend_dir():
    """The project folder when the add-on runs from the source tree, else ""."""
    return SOURCE_ROOT if os.path.isdir(os.path.join(SOURCE_ROOT, "backend_local")) else ""


def resolve_backend_dir(configured=""):
    chosen = configured or os.environ.get(ENV_BACKEND_DIR, "") or source_backend_dir()
    return os.path.abspath(os.path.expanduser(chosen)) if chosen else ""


def resolve_python(configured=""):
    """The configured Python, else $GEN3D_PYTHON, else the project's .venv next to the backend."""
    chosen = configured or os.environ.get(ENV_PYTHON, "")
    if not chosen:
        backend_dir = resolve_backend_dir()
        chosen = _venv_python(backend_dir) if backend_dir else ""
    # Keep the path as given (no realpath): a venv's python is a symlink whose location matters.
    return os.path.abspath(os.path.expanduser(chosen)) if chosen else ""
