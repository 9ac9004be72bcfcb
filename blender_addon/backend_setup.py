""""Set up local backend": the add-on's own Python environment, made without a terminal.

Steps (each a child process, run by BackgroundTask on a thread): find a Python 3.11+ with venv (one
on the system, else Blender's own), create the environment, update pip, install torch on its own
first (a CUDA build where an NVIDIA driver is installed, the CPU build from PyTorch's index
elsewhere, so pip never pulls gigabytes of CUDA libraries onto a machine without a GPU), then the
backend from the sources the add-on zip carries (backend_source/), and finally check the result.
Running it again repairs or updates what is there: a working environment and torch are kept.
No bpy here: setup_ui.py supplies the folders.
"""

import os
import re
import shutil
import subprocess
import sys

from .background_task import BackgroundTask, TaskError
from .contract import ADDON_DIR, SOURCE_ROOT
from .python_check import check_python

MIN_PYTHON = (3, 11)
# The same torch as scripts/setup.sh installs; pyproject's extras only admit what is installed.
TORCH_SPEC = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# PyPI's Linux torch is the CUDA build; on Windows PyPI has only the CPU build, so use PyTorch's index.
TORCH_CUDA_INDEX_WINDOWS = "https://download.pytorch.org/whl/cu128"
BACKEND_EXTRA = "local"
SOURCE_FOLDER = "backend_source"     # where build_addon.py puts the backend inside the add-on
ENV_FOLDER = ("gen3d", "backend-env")
BUILD_COPY = ".backend-build"        # pip builds a copy, so the add-on folder gets no build/ or egg-info
PROBE_TIMEOUT_S = 60.0
PIP_RAW_PROGRESS = (24, 1)           # pip prints "Progress N of M" lines with --progress-bar raw from 24.1

# (step, share of the whole bar)
STEPS = (("python", 0.02), ("venv", 0.05), ("pip", 0.05), ("torch", 0.55), ("backend", 0.28), ("check", 0.05))


def env_dir_for(user_dir):
    """The environment's folder for Blender's user folder (bpy.utils.resource_path('USER'), e.g.
    ~/.config/blender/4.2): beside the per-version folders, so add-on updates, reinstalls and Blender
    upgrades all keep it; inside user_dir when that is not a version folder (BLENDER_USER_RESOURCES)."""
    user_dir = os.path.abspath(user_dir)
    base = os.path.dirname(user_dir) if re.fullmatch(r"\d+\.\d+", os.path.basename(user_dir)) else user_dir
    return os.path.join(base, *ENV_FOLDER)


def venv_python(env_dir):
    return os.path.join(env_dir, "Scripts", "python.exe") if os.name == "nt" else os.path.join(env_dir, "bin", "python")


def backend_source_dir(addon_dir=ADDON_DIR, source_root=SOURCE_ROOT):
    """The backend sources to install: the zip's backend_source/, else the source tree the add-on runs from."""
    for folder in (os.path.join(addon_dir, SOURCE_FOLDER), source_root):
        if os.path.isfile(os.path.join(folder, "pyproject.toml")) and os.path.isdir(os.path.join(folder, "backend_local")):
            return folder
    return ""


def has_nvidia_driver(which=shutil.which):
    return which("nvidia-smi") is not None


def torch_install_args(nvidia, platform=sys.platform, cpu_index=TORCH_CPU_INDEX):
    """(pip arguments after `install`, a words-description of the build). cpu_index: where the CPU build
    comes from (PyTorch's index; a mirror where that cannot be reached)."""
    if platform == "darwin":
        return [TORCH_SPEC], "torch for macOS"
    if nvidia:
        if platform == "win32":
            return [TORCH_SPEC, "--index-url", TORCH_CUDA_INDEX_WINDOWS], "torch with CUDA"
        return [TORCH_SPEC], "torch with CUDA"
    return [TORCH_SPEC, "--index-url", cpu_index], "torch for the CPU (no NVIDIA driver found)"


def _probe(python, code):
    """stdout of `python -c code`, or None when it cannot run. Run from the Python's own folder: `-c` puts
    the working folder first on sys.path, and a project checkout there would shadow what is installed."""
    folder = os.path.dirname(os.path.abspath(python)) if os.path.isabs(python) else None
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S,
                              env=_clean_env(), cwd=folder if folder and os.path.isdir(folder) else None)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _clean_env():
    env = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP"):    # Blender's own must not leak into the venv
        env.pop(name, None)
    return env


def python_version(python):
    """(major, minor) of a Python that has venv and ensurepip, else None."""
    out = _probe(python, "import sys, venv, ensurepip; print('%d.%d' % sys.version_info[:2])")
    return tuple(int(n) for n in out.splitlines()[-1].split(".")) if out else None


def base_python_candidates(blender_python=None):
    names = ["python3.%d" % minor for minor in range(11, 15)] + ["python3", "python"]
    if os.name == "nt":
        names = ["py"] + names
    found = []
    for name in names:
        path = shutil.which(name)
        if path and path not in found:
            found.append(path)
    if blender_python and blender_python not in found:
        found.append(blender_python)        # last: an environment made from it breaks when that Blender goes
    return found


def find_base_python(candidates):
    """(python, (major, minor)) of the first candidate that is 3.11+ with venv, or raises TaskError."""
    seen = []
    for path in candidates:
        version = python_version(path)
        seen.append("%s (%s)" % (path, "%d.%d" % version if version else "no venv/ensurepip"))
        if version and version >= MIN_PYTHON:
            return path, version
    raise TaskError("No Python %d.%d or newer with the venv module was found (tried: %s). Install Python 3.11+ "
                    "(on Debian/Ubuntu: sudo apt install python3 python3-venv; elsewhere from python.org), then "
                    "press Set up local backend again." % (MIN_PYTHON + ("; ".join(seen) or "nothing on PATH",)))


class PipOutput:
    """Turns pip's output lines into a message and a rough fraction of the step."""

    # Resolving and downloading fill the first part of a step (how many packages come is not known in
    # advance, so each one moves the bar a little less); unpacking them ("Installing collected
    # packages", often the longest silent part) the rest.
    RESOLVE_SHARE = 0.7
    INSTALLING = 0.75

    def __init__(self):
        self.events = 0
        self.errors = []
        self.current = ""
        self.installing = False

    def feed(self, line):
        """(fraction of the step 0..1 or None, message or None) for one line."""
        text = line.strip()
        match = re.match(r"Progress (\d+) of (\d+)", text)
        if match:
            done, total = int(match.group(1)), int(match.group(2))
            share = done / total if total else 0.0
            return None, "downloading %s: %d%%" % (self.current or "packages", round(100 * share))
        if text.startswith("ERROR:"):
            self.errors.append(text)
            return None, None
        if text.startswith("Installing collected packages:"):
            self.installing = True
            return self.INSTALLING, ("installing " + text.split(":", 1)[1].strip())[:120]
        if text.startswith("Successfully installed"):
            return 1.0, text[:120]
        for prefix, verb in (("Collecting ", "collecting"), ("Downloading ", "downloading"),
                             ("Processing ", "unpacking"), ("Building wheel", "building")):
            if text.startswith(prefix) and not self.installing:
                self.events += 1
                rest = text[len(prefix):].strip()
                if verb in ("downloading", "unpacking"):
                    self.current = os.path.basename(rest.split(" ")[0])
                message = "%s %s" % (verb, rest) if rest else verb
                return self.RESOLVE_SHARE * (1.0 - 0.9 ** self.events), message[:120]
        return None, None


class SetupTask(BackgroundTask):
    title = "local backend set-up"

    def __init__(self, env_dir, source_dir, log_path, candidates=(), nvidia=None, platform=sys.platform,
                 torch_cpu_index=TORCH_CPU_INDEX):
        super().__init__(log_path)
        self.torch_cpu_index = torch_cpu_index
        self.env_dir = env_dir
        self.source_dir = source_dir
        self.candidates = list(candidates)
        self.nvidia = has_nvidia_driver() if nvidia is None else nvidia
        self.platform = platform
        self.python = venv_python(env_dir)
        self._bounds = {}
        start = 0.0
        for name, share in STEPS:
            self._bounds[name] = (start, start + share)
            start += share

    def _step(self, name, sub=0.0, message=None):
        low, high = self._bounds[name]
        self.set_progress(low + (high - low) * sub, message)

    def _pip(self, step, args, what):
        parser = PipOutput()

        def on_line(line):
            sub, message = parser.feed(line)
            self._step(step, sub or 0.0, message)

        code = self.run_process([self.python, "-m", "pip", "install", "--disable-pip-version-check"] + args,
                                on_line=on_line, env=_clean_env())
        if code != 0:
            detail = " ".join(parser.errors[-2:]) or "pip exit code %d" % code
            raise TaskError("Installing %s failed: %s. Check the internet connection and the free disk space, then "
                            "press Set up local backend again; the log has pip's output: %s"
                            % (what, detail, self.log_path))

    def run(self):
        if not self.source_dir:
            raise TaskError("This add-on has no backend sources to install (backend_source/ is missing). Install "
                            "the add-on from a zip made by build_addon.py.")
        self._step("python", 0.0, "looking for Python %d.%d+" % MIN_PYTHON)
        if _probe(self.python, "import pip, sys; print(sys.version)") is None:
            base, version = find_base_python(self.candidates)
            self.log("base Python: %s (%d.%d)" % (base, version[0], version[1]))
            self._step("venv", 0.0, "creating the environment in %s with Python %d.%d" % ((self.env_dir,) + version))
            if os.path.exists(self.env_dir):              # a broken or half-made environment
                shutil.rmtree(self.env_dir)
            os.makedirs(os.path.dirname(self.env_dir), exist_ok=True)
            if self.run_process([base, "-m", "venv", self.env_dir], env=_clean_env()) != 0:
                raise TaskError("Creating the environment with %s failed; the log says why: %s. On Debian/Ubuntu "
                                "install python3-venv." % (base, self.log_path))
        else:
            self.log("keeping the environment in %s" % self.env_dir)
        self._step("pip", 0.0, "updating pip")
        self._pip("pip", ["--upgrade", "pip"], "pip")
        raw = _pip_version(self.python) >= PIP_RAW_PROGRESS
        progress = ["--progress-bar", "raw"] if raw else ["--progress-bar", "off"]

        has_torch = _probe(self.python, "import torch; print(torch.__version__)")
        if has_torch:
            self.log("keeping torch %s" % has_torch.splitlines()[-1])
        else:
            args, label = torch_install_args(self.nvidia, self.platform, self.torch_cpu_index)
            self._step("torch", 0.0, "installing %s (large download)" % label)
            self._pip("torch", args + progress, label)

        self._step("backend", 0.0, "installing the Gen3D backend")
        build = os.path.join(self.env_dir, BUILD_COPY)
        shutil.rmtree(build, ignore_errors=True)
        shutil.copytree(self.source_dir, build, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "build",
                                                                              "*.egg-info", ".venv", ".git"))
        try:
            self._pip("backend", ["--upgrade", "%s[%s]" % (build, BACKEND_EXTRA)] + progress, "the Gen3D backend")
        finally:
            shutil.rmtree(build, ignore_errors=True)

        self._step("check", 0.0, "checking the environment")
        self.check_cancelled()
        result = check_python(self.python)
        self.log("check: %s" % result.summary())
        if not result.ok:
            raise TaskError("The environment was made but does not work: " + result.problem)
        self.set_progress(1.0, result.summary())
        return result


def _pip_version(python):
    out = _probe(python, "import pip; print(pip.__version__)")
    try:
        return tuple(int(n) for n in re.findall(r"\d+", out.splitlines()[-1])[:2]) if out else (0, 0)
    except (ValueError, IndexError):
        return (0, 0)
