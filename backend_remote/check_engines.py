"""Fail the worker image's build when an engine it bakes would not run.

    python -m backend_remote.check_engines --engines hunyuan3d-2.1[,hunyuan3d-2,...] [--no-gpu-ok]

Two checks per engine, each in a fresh interpreter: (1) import the engine's whole module chain as it
runs (spec.modules from backend_local/install/spec.py, with the checkout's folders on sys.path from the
install record), so a package that only a deep import needs is caught at build time, not as the first
job's INTERNAL; compiled modules must load as compiled, not as a pure-Python fallback; (2) `python -m
backend_local engines --json` must report the engine available with no stage unavailable. A build
machine has no GPU: with --no-gpu-ok a stage whose only problem is the missing GPU passes.
Exit 0 when every engine passes, 1 with one line per problem otherwise.
"""

import argparse
import json
import os
import subprocess
import sys

from backend_local.install import record
from backend_local.install.spec import ENGINES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO_GPU = "no usable NVIDIA GPU"      # the engines' wording for "the painter needs CUDA and none is visible"

# Runs in the child: imports each module in order and prints {"failed": [[module, error], ...]}.
IMPORT_SCRIPT = r"""
import importlib, importlib.util, json, sys, sysconfig, types
job = json.loads(sys.argv[1])
sys.path[:0] = job["paths"]
for name in job["placeholders"]:
    try:
        missing = importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        missing = True
    if missing:
        sys.modules[name] = types.ModuleType(name)
failed = []
for entry in job["modules"]:
    name, _, call = entry.partition(":")
    try:
        module = importlib.import_module(name)
        if call:
            getattr(module, call)()
        if name in job["compiled"] and not str(getattr(module, "__file__", "")).endswith(
                sysconfig.get_config_var("EXT_SUFFIX")):
            raise ImportError("loaded %s, not the compiled extension" % getattr(module, "__file__", "?"))
    except BaseException as exc:
        failed.append([entry, "%s: %s" % (type(exc).__name__, exc)])
print(json.dumps({"failed": failed}))
"""


def import_job(spec, source_dir):
    paths = [os.path.normpath(os.path.join(source_dir, path)) for path in spec.library_paths] if source_dir else []
    # A compiled module with a pure-Python twin (hy3dgen's mesh_processor.py) must load as the compiled one.
    compiled = [ext.module for ext in spec.extensions if ext.kind == "pybind"]
    return {"paths": paths, "placeholders": list(spec.placeholders), "modules": list(spec.modules),
            "compiled": compiled}


def import_problems(job, python=None):
    """[(module, error)] of the modules that fail to import in a fresh interpreter."""
    proc = subprocess.run([python or sys.executable, "-c", IMPORT_SCRIPT, json.dumps(job)], capture_output=True,
                          text=True)
    try:
        return [tuple(item) for item in json.loads(proc.stdout.strip().splitlines()[-1])["failed"]]
    except (ValueError, IndexError, KeyError):
        return [("(interpreter)", (proc.stderr or proc.stdout).strip()[-500:] or "exit %d" % proc.returncode)]


def engines_json(env=None):
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "backend_local", "engines", "--json"], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit("`engines --json` failed: %s" % proc.stderr.strip()[-800:])
    return json.loads(proc.stdout)


def only_gpu_missing(reason):
    """Whether every problem in an `engines` reason ("; "-joined) is the missing GPU."""
    parts = [part for part in reason.split("; ") if part.strip()]
    return bool(parts) and all(NO_GPU in part for part in parts)


def availability_problems(rows, names, gpu_optional=False):
    """Problems with the `engines --json` rows for the engines in `names`: the engine must be available,
    and an available engine's reason (the stages beyond shape that are not) must be empty, or with
    `gpu_optional` name nothing but the missing GPU."""
    by_name = {row.get("name"): row for row in rows}
    problems = []
    for name in names:
        row = by_name.get(name)
        if row is None:
            problems.append("%s: not listed by `engines`" % name)
        elif not row.get("available"):
            problems.append("%s: unavailable: %s" % (name, row.get("reason")))
        elif row.get("reason") and not (gpu_optional and only_gpu_missing(row["reason"])):
            problems.append("%s: %s" % (name, row["reason"]))
    return problems


def check(names, gpu_optional=False):
    installed = record.load()["engines"]
    problems = []
    for name in names:
        spec = ENGINES[name]
        source = (os.environ.get(spec.source_env) if spec.source_env else None) or \
            (installed.get(name) or {}).get("source")
        if spec.source and not source:
            problems.append("%s: not installed (no source in %s); run `python -m backend_local install %s`"
                            % (name, record.record_path(), name))
            continue
        problems += ["%s: import %s failed: %s" % (name, module, error)
                     for module, error in import_problems(import_job(spec, source))]
    # The environment as the worker sees it: the RunPod handler does not read the install record, so the
    # image's ENV must point the engines at what was installed (GEN3D_WEIGHTS_DIR, GEN3D_HUNYUAN21_REPO).
    env = dict(os.environ, GEN3D_INSTALL_RECORD=os.path.join(os.path.dirname(record.record_path()), ".unused"))
    problems += availability_problems(engines_json(env), names, gpu_optional)
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m backend_remote.check_engines", description=__doc__.splitlines()[0])
    parser.add_argument("--engines", required=True, help="comma-separated engines the image bakes")
    parser.add_argument("--no-gpu-ok", action="store_true", help="a stage missing only a GPU passes (build time)")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = [name for name in names if name not in ENGINES]
    if unknown:
        print("unknown engine(s): %s; choose from %s" % (", ".join(unknown), ", ".join(ENGINES)), file=sys.stderr)
        return 1
    problems = check(names, args.no_gpu_ok)
    for problem in problems:
        print("check_engines: %s" % problem, file=sys.stderr)
    if not problems:
        print("check_engines: %s ready" % ", ".join(names))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
