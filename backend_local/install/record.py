"""The install record (~/.gen3d/install.json, or $GEN3D_INSTALL_RECORD): what `install` put where.

The engines take their defaults from it: the weights folder and the Hunyuan3D-2.1 checkout, unless a
setting or $GEN3D_WEIGHTS_DIR / $GEN3D_HUNYUAN21_REPO says otherwise (`apply_to_environment`).
"""

import json
import os
import tempfile
import time

RECORD_ENV = "GEN3D_INSTALL_RECORD"
WEIGHTS_ENV = "GEN3D_WEIGHTS_DIR"            # the engines' names (hunyuan_common)
REPO21_ENV = "GEN3D_HUNYUAN21_REPO"


def gen3d_home():
    return os.path.expanduser(os.environ.get("GEN3D_HOME") or "~/.gen3d")


def record_path():
    return os.path.expanduser(os.environ.get(RECORD_ENV) or os.path.join(gen3d_home(), "install.json"))


def load(path=None):
    try:
        with open(path or record_path()) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {"engines": {}}
    if not isinstance(data, dict) or not isinstance(data.get("engines"), dict):
        return {"engines": {}}
    return data


def save(data, path=None):
    """Write atomically: a reader never sees half a record."""
    path = path or record_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=".install-", suffix=".json", dir=os.path.dirname(path))
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
    os.replace(partial, path)


def update_engine(name, entry, path=None):
    data = load(path)
    entry = dict(entry, installed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    data["engines"][name] = entry
    if entry.get("weights_dir"):
        data["weights_dir"] = entry["weights_dir"]
    if entry.get("source") and name == "hunyuan3d-2.1":
        data["hunyuan21_repo"] = entry["source"]
    save(data, path)
    return data


def engine_entry(name, path=None):
    return load(path)["engines"].get(name) or {}


def defaults(path=None):
    """{"weights_dir": ..., "hunyuan21_repo": ...} from the record (missing keys: not installed)."""
    data = load(path)
    return {key: data[key] for key in ("weights_dir", "hunyuan21_repo") if data.get(key)}


def apply_to_environment(environ=None, path=None):
    """Set the engines' variables from the record where they are not set already."""
    environ = os.environ if environ is None else environ
    values = defaults(path)
    for key, env in (("weights_dir", WEIGHTS_ENV), ("hunyuan21_repo", REPO21_ENV)):
        if values.get(key) and not environ.get(env):
            environ[env] = values[key]
    return values
