"""Build the engines' native extensions from the source checkout against the installed torch.

"setup" extensions (custom_rasterizer) are torch.utils.cpp_extension projects: `pip install
--no-build-isolation DIR`, so they compile against this environment's torch (an isolated build would
fetch another torch and produce a module that does not load). "pybind" extensions are one C++ file
compiled the way upstream's compile_mesh_painter.sh does, but named with this interpreter's
sysconfig EXT_SUFFIX (the script's `python3-config` may be absent or belong to another Python).
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from shared.errors import ENGINE_UNAVAILABLE, Gen3DError

from . import pip_step


def cuda_problem():
    """Why CUDA extensions cannot be built here, or "" (a GPU need not be present: an arch list will do)."""
    import torch

    if torch.version.cuda is None:
        return ("the installed torch %s is a CPU-only build, and the painter's rasterizer is CUDA code. Install a "
                "CUDA build of torch (see https://pytorch.org/get-started/locally/), or use hunyuan3d-2mini with "
                "texture_engine 'builtin' on this machine" % torch.__version__)
    from torch.utils import cpp_extension

    home = cpp_extension.CUDA_HOME
    nvcc = os.path.join(home, "bin", "nvcc") if home else shutil.which("nvcc")
    if not nvcc or not os.path.exists(nvcc):
        return ("nvcc (the CUDA compiler) was not found. Install the CUDA toolkit %s (the version torch was built "
                "with), then put its bin/ on PATH or set CUDA_HOME to it" % torch.version.cuda)
    proc = subprocess.run([nvcc, "--version"], capture_output=True, text=True)
    found = re.search(r"release (\d+)\.(\d+)", proc.stdout or "")
    if found and found.group(1) != torch.version.cuda.split(".")[0]:
        return ("nvcc at %s is CUDA %s.%s but torch was built with CUDA %s; install the matching toolkit and set "
                "CUDA_HOME to it" % (nvcc, found.group(1), found.group(2), torch.version.cuda))
    if not torch.cuda.is_available() and not os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return ("no GPU is visible, so the GPU generations to compile for are unknown; set TORCH_CUDA_ARCH_LIST, "
                "e.g. '8.0;8.6;8.9;9.0;10.0;12.0+PTX'")
    return ""


def compiler():
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _fail(ext, why, stage="build"):
    return Gen3DError(ENGINE_UNAVAILABLE, "Could not build %s: %s." % (ext.name, why), stage=stage, retryable=False)


def _loads(module, path_entries=(), python=None):
    """Whether a fresh interpreter imports `module` (torch first: extensions link against it)."""
    env = dict(os.environ)
    if path_entries:
        env["PYTHONPATH"] = os.pathsep.join(list(path_entries) + [env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    proc = subprocess.run([python or sys.executable, "-c", "import torch, %s" % module], capture_output=True, text=True,
                          env=env)
    return proc.returncode == 0, (proc.stderr or "").strip().splitlines()[-1:] or [""]


def build_setup(ext, source_dir, reporter, target=None, log=None):
    """pip install --no-build-isolation <source>/<ext.path>; `target` installs into that folder instead
    of the environment (tests). Skipped when the module already imports."""
    entries = [target] if target else []
    if _loads(ext.module, entries)[0]:
        reporter.note("%s is already built" % ext.name)
        return False
    if ext.cuda:
        why = cuda_problem()
        if why:
            raise _fail(ext, why)
    folder = os.path.join(source_dir, ext.path)
    if not os.path.isfile(os.path.join(folder, "setup.py")):
        raise _fail(ext, "%s has no setup.py; is %s a complete checkout?" % (folder, source_dir))
    os.environ.setdefault("MAX_JOBS", str(os.cpu_count() or 1))
    extra = ("--target", target) if target else ()
    try:
        pip_step.run_pip(["--no-build-isolation", folder], ext.name, extra_args=extra, log=log)
    except Gen3DError as exc:
        raise _fail(ext, "its compilation failed (the compiler's messages are above). " + exc.message.split(
            "What to do:")[0].strip())
    ok, last = _loads(ext.module, entries)
    if not ok:
        raise _fail(ext, "it was built but `import %s` fails: %s" % (ext.module, last[0]))
    return True


def pybind_dest(ext, source_dir):
    """The folder the compiled module goes to: in the checkout, or inside an installed package."""
    if not ext.dest.startswith("package:"):
        return os.path.join(source_dir, ext.dest)
    dotted = ext.dest.split(":", 1)[1]
    top, _, rest = dotted.partition(".")
    spec = importlib.util.find_spec(top)          # the top level only: importing hy3dgen.texgen would load torch code
    if spec is None or not spec.submodule_search_locations:
        raise _fail(ext, "the package %s is not installed (the packages step installs it)" % top)
    return os.path.join(list(spec.submodule_search_locations)[0], *rest.split(".")) if rest else \
        list(spec.submodule_search_locations)[0]


def pybind_includes():
    """pybind11's headers (the package), else the copy torch ships, and Python's own."""
    try:
        import pybind11
        includes = [pybind11.get_include()]
    except ImportError:
        from torch.utils import cpp_extension
        includes = [path for path in cpp_extension.include_paths() if os.path.isdir(os.path.join(path, "pybind11"))]
    return includes + [sysconfig.get_paths()["include"]]


def build_pybind(ext, source_dir, reporter, dest=None, log=None):
    """c++ -O3 -shared -fPIC <pybind11 includes> X.cpp -o <dest>/<name><EXT_SUFFIX>; skipped when the
    module there is newer than its source. Returns the module's path."""
    cpp = os.path.join(source_dir, ext.path)
    if not os.path.isfile(cpp):
        raise _fail(ext, "%s is missing; is %s a complete checkout?" % (cpp, source_dir))
    dest = dest or pybind_dest(ext, source_dir)
    output = os.path.join(dest, os.path.splitext(os.path.basename(cpp))[0] + sysconfig.get_config_var("EXT_SUFFIX"))
    if os.path.isfile(output) and os.path.getmtime(output) >= os.path.getmtime(cpp):
        reporter.note("%s is already built (%s)" % (ext.name, output))
        return output
    cxx = compiler()
    if not cxx:
        raise _fail(ext, "no C++ compiler was found (install one: Debian/Ubuntu `apt-get install build-essential`, "
                         "or set CXX)")
    os.makedirs(dest, exist_ok=True)
    partial = output + ".partial"
    command = [cxx, "-O3", "-Wall", "-shared", "-std=c++17", "-fPIC"]
    command += ["-I" + path for path in pybind_includes()] + [cpp, "-o", partial]
    print(" ".join(command), file=log or sys.stderr, flush=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise _fail(ext, "the compiler failed:\n%s" % "\n".join((proc.stderr or "").strip().splitlines()[-15:]))
    os.replace(partial, output)
    check = ("import importlib.util as u; s = u.spec_from_file_location(%r, %r); m = u.module_from_spec(s); "
             "s.loader.exec_module(m)" % (os.path.basename(cpp).split(".")[0], output))
    loaded = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    if loaded.returncode != 0:
        os.remove(output)
        raise _fail(ext, "the compiled module does not load: %s" % (loaded.stderr.strip().splitlines() or [""])[-1])
    return output


def build_all(spec, source_dir, reporter, log=None):
    """Every extension of `spec`; returns {name: what was built or found}."""
    built = {}
    for index, ext in enumerate(spec.extensions):
        reporter.progress("build", index / max(len(spec.extensions), 1), "building %s" % ext.name)
        if ext.kind == "setup":
            build_setup(ext, source_dir, reporter, log=log)
            built[ext.name] = ext.module
        else:
            built[ext.name] = build_pybind(ext, source_dir, reporter, log=log)
    reporter.progress("build", 1.0, "native extensions ready")
    return built
