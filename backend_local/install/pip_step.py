"""Install an engine's Python packages into the running interpreter's environment.

torch is never replaced: every pip call gets a constraint file pinning the installed torch, so a
requirement that wants another torch fails instead of pulling several GB of a different build.
Requirements already satisfied are not handed to pip at all (a second install runs no pip).
"""

import importlib.metadata
import os
import subprocess
import sys
import tempfile

from shared.errors import ENGINE_UNAVAILABLE, Gen3DError

TAIL_LINES = 15


def installed_version(name, search_path=None):
    try:
        if search_path:
            dists = list(importlib.metadata.distributions(name=name, path=list(search_path)))
            return dists[0].version if dists else None
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def satisfied(requirement, search_path=None):
    """Whether `requirement` (a pip requirement string) is met by what is installed."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    version = installed_version(req.name, search_path)
    return version is not None and (not req.specifier or req.specifier.contains(version, prereleases=True))


def torch_constraint():
    """'torch==<installed>' (None when torch is not installed: then nothing is pinned)."""
    version = installed_version("torch")
    return "torch==%s" % version if version else None


def onnxruntime_requirement(cuda):
    """onnxruntime-gpu with a CUDA torch, else onnxruntime; never the second when either is installed
    (both together fight over the same `onnxruntime` module)."""
    for name in ("onnxruntime-gpu", "onnxruntime"):
        if installed_version(name):
            return None
    return "onnxruntime-gpu" if cuda else "onnxruntime"


def run_pip(args, what, python=None, extra_args=(), log=None):
    """One `pip install`, its output to `log` (stderr: stdout is reserved for progress lines)."""
    constraint = torch_constraint()
    with tempfile.TemporaryDirectory(prefix="gen3d-pip-") as tmp:
        command = [python or sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
        if constraint:
            path = os.path.join(tmp, "constraints.txt")
            with open(path, "w") as handle:
                handle.write(constraint + "\n")
            command += ["--constraint", path]
        command += list(extra_args) + list(args)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip())
            print(line.rstrip(), file=log or sys.stderr, flush=True)
        code = proc.wait()
    if code != 0:
        tail = "\n".join(lines[-TAIL_LINES:])
        raise Gen3DError(ENGINE_UNAVAILABLE, "pip could not install %s (exit code %d). pip said:\n%s\nWhat to do: check "
                         "the network connection (or the package index in pip's configuration) and run the install "
                         "again; a conflict with the installed %s means a package wants another torch: install a "
                         "torch release it supports first." % (what, code, tail, constraint or "packages"),
                         stage="packages", retryable=True)
    return command


def install_packages(spec, reporter, cuda, python=None, extra_args=(), search_path=None, log=None):
    """Install what `spec` lists that is not installed yet. Returns the pip commands that ran."""
    wanted = list(spec.packages)
    onnx = onnxruntime_requirement(cuda) if spec.onnxruntime else None
    if onnx:
        wanted.append(onnx)
    missing = [req for req in wanted if not satisfied(req, search_path)]
    if not missing:
        reporter.progress("packages", 1.0, "all %d packages already installed" % len(wanted))
        return []
    build_tools = [req for req in missing if _name(req) in ("setuptools", "wheel", "pybind11", "ninja")]
    isolated = [req for req in missing if req in spec.no_build_isolation]
    no_deps = [req for req in missing if req in spec.no_deps]
    rest = [req for req in missing if req not in build_tools + isolated + no_deps]
    groups = [(build_tools, ()), (isolated, ("--no-build-isolation",)), (rest, ()), (no_deps, ("--no-deps",))]
    groups = [(reqs, flags) for reqs, flags in groups if reqs]
    commands = []
    for index, (reqs, flags) in enumerate(groups):
        reporter.progress("packages", index / len(groups), "pip install %s" % " ".join(flags + tuple(reqs)))
        commands.append(run_pip(list(flags) + reqs, ", ".join(reqs), python, extra_args, log))
    reporter.progress("packages", 1.0, "installed %d package(s)" % len(missing))
    return commands


def _name(requirement):
    from packaging.requirements import Requirement

    return Requirement(requirement).name.lower()
