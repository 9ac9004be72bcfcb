"""The job contract (shared/) as the add-on sees it.

Built add-ons carry a copy of shared/ as the subpackage `<add-on>.shared` (build_addon.py vendors it).
Run from the source tree there is no copy, so the top-level shared/ next to blender_addon/ is loaded
under that same subpackage name: every module imports the contract as `from .contract import ...` and
never depends on what happens to be on sys.path.
"""

import importlib
import importlib.util
import os
import sys

ADDON_DIR = os.path.dirname(os.path.abspath(__file__))
# The project folder when running from the source tree (it holds shared/ and backend_local/).
SOURCE_ROOT = os.path.dirname(ADDON_DIR)


def _load_shared():
    name = __package__ + ".shared"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
    init = os.path.join(SOURCE_ROOT, "shared", "__init__.py")
    if not os.path.isfile(init):
        raise ImportError("Gen3D: the job contract (shared/) is missing; reinstall the add-on from a built zip")
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[os.path.dirname(init)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


shared = _load_shared()

from .shared import errors, manifest, progress, request, version  # noqa: E402  (needs _load_shared first)
from .shared.errors import Gen3DError  # noqa: E402

__all__ = ["ADDON_DIR", "SOURCE_ROOT", "Gen3DError", "errors", "manifest", "progress", "request", "shared",
           "version"]
