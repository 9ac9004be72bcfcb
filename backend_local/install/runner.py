"""`python -m backend_local install ENGINE`: the steps in order, each skipped when already done.

check (engine, torch, CUDA where the painter needs it, the weight listing and free disk space, so a
doomed install fails before it spends anything) -> packages -> source -> build -> weights -> verify
-> record, then what `engines` now says (a fresh interpreter, so it sees the new packages).
"""

import json
import os
import subprocess
import sys

from shared.errors import ENGINE_UNAVAILABLE, INVALID_INPUT, Gen3DError

from . import build_step, disk, pip_step, record, source_step, weights_step
from .spec import ENGINES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def default_weights_dir():
    return record.defaults().get("weights_dir") or os.environ.get(record.WEIGHTS_ENV) or \
        os.path.join(record.gen3d_home(), "weights")


def _torch():
    try:
        import torch
    except ImportError:
        raise Gen3DError(ENGINE_UNAVAILABLE, "torch is not installed in this Python (%s). Install it first (for a "
                         "GPU, the CUDA build: https://pytorch.org/get-started/locally/; scripts/setup.sh does this), "
                         "then run the install again." % sys.executable, stage="check", retryable=False)
    return torch


def check(spec, weights_dir, reporter, entry):
    """Everything that can fail before anything is installed. Returns {repo_id: listing or None}."""
    torch = _torch()
    cuda_exts = [ext for ext in spec.extensions if ext.cuda and not build_step._loads(ext.module)[0]]
    if cuda_exts:
        why = build_step.cuda_problem()
        if why:
            raise Gen3DError(ENGINE_UNAVAILABLE, "%s needs %s, a CUDA extension, and %s." % (
                spec.name, cuda_exts[0].name, why), stage="check", retryable=False)
    reporter.progress("check", 0.3, "torch %s (%s)" % (torch.__version__, "CUDA %s" % torch.version.cuda
                                                         if torch.version.cuda else "CPU"))
    listings, needed = {}, 0
    known = entry.get("weights") or {}
    for weights in spec.weights:
        target = weights_step.target_dir(weights_dir, weights.repo_id)
        before = known.get(weights.repo_id) or {}
        files = {path: (int(size), None) for path, size in (before.get("files") or {}).items()}
        if files and weights_step.present(target, files) == set(files):
            listings[weights.repo_id] = None                # complete: no network needed
            continue
        commit, files = weights_step.listing(weights, before.get("revision") or weights.revision)
        listings[weights.repo_id] = (commit, files)
        have = weights_step.present(target, files)
        needed += sum(size for path, (size, _sha) in files.items() if path not in have)
    for item in spec.files:
        path = os.path.join(weights_dir, item.filename)
        if not (os.path.isfile(path) and os.path.getsize(path) == item.size):
            needed += item.size
    disk.require_space(weights_dir, needed, "the %s weights" % spec.name, stage="check")
    reporter.progress("check", 1.0, "%.2f GB of weights to download into %s" % (needed / 2**30, weights_dir))
    return listings


def fetch_weights(spec, weights_dir, reporter, entry, listings):
    known = dict(entry.get("weights") or {})
    parts = len(spec.weights) + len(spec.files)
    downloaded = 0
    for index, weights in enumerate(spec.weights):
        result = weights_step.fetch(weights, weights_dir, reporter, known=known.get(weights.repo_id),
                                    offset=index / parts, share=1.0 / parts, listed=listings.get(weights.repo_id))
        downloaded += result.pop("downloaded")
        known[weights.repo_id] = result
    for index, item in enumerate(spec.files, start=len(spec.weights)):
        downloaded += weights_step.fetch_url(item, weights_dir, reporter, offset=index / parts, share=1.0 / parts)
    return known, downloaded


def engines_now(env):
    """`python -m backend_local engines --json` in a fresh interpreter."""
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "backend_local", "engines", "--json"], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise Gen3DError(ENGINE_UNAVAILABLE, "The install finished but `engines` failed: %s" % (
            (proc.stderr or proc.stdout).strip()[-800:]), stage="verify", retryable=False)


def install(name, reporter, weights_dir=None, source=None):
    """Install engine `name`; returns (its `engines` row, all rows, the record entry)."""
    spec = ENGINES.get(name)
    if spec is None:
        raise Gen3DError(INVALID_INPUT, "Unknown engine %r; installable engines: %s." % (name, ", ".join(ENGINES)),
                         stage="check", retryable=False)
    entry = record.engine_entry(name)
    weights_dir = os.path.abspath(os.path.expanduser(weights_dir or entry.get("weights_dir") or default_weights_dir()))
    reporter.progress("check", 0.0, "installing %s (weights into %s)" % (name, weights_dir))
    listings = check(spec, weights_dir, reporter, entry)

    import torch
    pip_step.install_packages(spec, reporter, cuda=torch.version.cuda is not None)

    source_dir = None
    if spec.source:
        if source:
            source_dir = source_step.use_local(spec.source, source, reporter)
        elif entry.get("source") and os.path.isfile(os.path.join(entry["source"], spec.source.marker)) and \
                source_step.checkout_commit(entry["source"]) in (spec.source.commit, None):
            source_dir = entry["source"]
            reporter.progress("source", 1.0, "using %s" % source_dir)
        else:
            source_dir = source_step.fetch(spec.source, reporter)
    else:
        reporter.progress("source", 1.0, "no source checkout needed")

    if spec.extensions:
        build_step.build_all(spec, source_dir, reporter)
    else:
        reporter.progress("build", 1.0, "no native extensions")

    known, downloaded = fetch_weights(spec, weights_dir, reporter, entry, listings)
    reporter.progress("verify", 0.5, "%.2f GB downloaded; all weight files present at their sizes" % (downloaded / 2**30))

    new_entry = {"weights_dir": weights_dir, "source": source_dir, "commit": spec.source.commit if spec.source else None,
                 "packages": list(spec.packages), "weights": known}
    record.update_engine(name, new_entry)
    env = dict(os.environ)
    for key, value in ((record.WEIGHTS_ENV, weights_dir), (record.REPO21_ENV, source_dir if name == "hunyuan3d-2.1"
                                                          else None)):
        if value and os.environ.get(key) and os.path.abspath(os.environ[key]) != value:
            reporter.note("%s is set to %s, so the engines look there instead of %s; unset it to use this install"
                          % (key, os.environ[key], value))
        elif value:
            env[key] = value
    rows = engines_now(env)
    row = next((r for r in rows if r.get("name") == name), {"available": False, "reason": "not listed"})
    reporter.progress("verify", 1.0, "%s is %s" % (name, "available" if row.get("available") else "not available"))
    return row, rows, new_entry
