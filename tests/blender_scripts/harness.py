"""pytest-side helpers for the add-on tests: build the zips, run addon_driver.py in a fresh Blender
process (the bpy module or Debian's `blender -b`) with its own throw-away user folders."""

import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPTS = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(SCRIPTS, "addon_driver.py")
DATA = os.path.join(ROOT, "tests", "data")
VENV_PYTHON = sys.executable                   # pytest runs in the project venv: it has the backend and bpy
# The backend the add-on's worker runs; tests use this checkout unless told otherwise.
BACKEND_DIR = os.environ.get("GEN3D_TEST_BACKEND_DIR", ROOT)
SMALL_REQUEST = {"face_count": 5000, "texture_size": 512}


def build_zips(out_dir):
    """(extension zip, legacy zip) freshly built by build_addon.py."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "build_addon.py"), "--out", out_dir, "--no-validate"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    zips = sorted(os.listdir(out_dir))
    extension = os.path.join(out_dir, next(z for z in zips if z.endswith(".zip") and "legacy" not in z))
    legacy = os.path.join(out_dir, next(z for z in zips if z.endswith("-legacy.zip")))
    return extension, legacy


def isolated_env(home):
    """Blender user folders (config, scripts, extensions, data) inside `home`, for 3.4 and 4.2+."""
    env = dict(os.environ)
    for name, sub in (("BLENDER_USER_RESOURCES", ""), ("BLENDER_USER_CONFIG", "config"),
                      ("BLENDER_USER_SCRIPTS", "scripts"), ("BLENDER_USER_DATAFILES", "datafiles"),
                      ("BLENDER_USER_EXTENSIONS", "extensions")):
        env[name] = os.path.join(home, sub) if sub else home
    env.pop("GEN3D_PYTHON", None)
    env.pop("GEN3D_BACKEND_DIR", None)
    return env


def blender_binary():
    path = os.environ.get("GEN3D_TEST_BLENDER") or shutil.which("blender")
    assert path, ("the add-on tests need Debian's `blender` binary for `blender -b` (scripts/setup.sh installs it: "
                  "apt-get install blender python3-numpy)")
    return path


def run_driver(scenario, config, tmp_path, python=None, blender=None, timeout=300):
    """Run one scenario in a fresh process; returns (report dict, completed process)."""
    tmp_path = str(tmp_path)
    os.makedirs(tmp_path, exist_ok=True)
    config_path = os.path.join(tmp_path, "%s-config.json" % scenario)
    report_path = os.path.join(tmp_path, "%s-report.json" % scenario)
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    if blender:
        command = [blender, "-b", "--factory-startup", "-P", DRIVER, "--", scenario, config_path, report_path]
    else:
        command = [python or VENV_PYTHON, DRIVER, scenario, config_path, report_path]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=isolated_env(os.path.join(tmp_path, "blender-home")), cwd=tmp_path)
    assert os.path.isfile(report_path), "no report from %s (exit %s)\n%s\n%s" % (
        scenario, proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:])
    with open(report_path, encoding="utf-8") as handle:
        report = json.load(handle)
    assert "exception" not in report, report["exception"] + "\n--- stderr ---\n" + proc.stderr[-4000:]
    assert proc.returncode == 0, "exit %s\n%s" % (proc.returncode, proc.stderr[-4000:])
    return report, proc


def copy_image(case, tmp_path, name=None):
    """tests/data/<case>/input.png copied as <name or case>.png (the object is named after the file)."""
    target = os.path.join(str(tmp_path), "%s.png" % (name or case))
    shutil.copyfile(os.path.join(DATA, case, "input.png"), target)
    return target


def base_config(kind, zip_path, tmp_path, **extra):
    config = {
        "kind": kind, "zip": zip_path, "timeout": 240,
        "prefs": {"python_path": VENV_PYTHON, "backend_dir": BACKEND_DIR,
                  "output_dir": os.path.join(str(tmp_path), "results"), "device": "cpu"},
        "request": dict(SMALL_REQUEST),
    }
    config.update(extra)
    return config


def principled_inputs(material, node_name="Principled BSDF"):
    """{input socket: (from node, from socket)} of the links into a node."""
    return {to_socket: (from_node, from_socket) for from_node, from_socket, to_node, to_socket in material["links"]
            if to_node == node_name}


def node_for_file(material, filename):
    names = [name for name, node in material["nodes"].items() if node.get("file") == filename]
    assert len(names) == 1, (filename, material["nodes"])
    return names[0], material["nodes"][names[0]]
