"""Speed options upstream offers, as engine settings: the surface-decoding batch (num_chunks), FlashVDM
(the turbo VAE's fast decoder), torch.compile, and 2.0's compiled mesh_processor."""

import importlib.machinery
import os
import sys

# Surface-decoding batch (the libraries' num_chunks) unless the engine setting says otherwise: upstream's
# call default. Measured at full size on an H100 (hunyuan3d-2, 50 steps, octree 256): the shape stage takes
# the same time at 8000 as at 200000 points per batch (15.7 s against 15.8 s) and peaks at 5.2 GB instead of
# 9.2 GB, so a larger batch only raises the job's peak.
DEFAULT_CHUNKS = 8000


def log(message):
    print("[gen3d] %s" % message, file=sys.stderr, flush=True)


def shape_chunks(settings):
    """num_chunks for the shape call: the engine setting "num_chunks" when given, else DEFAULT_CHUNKS."""
    value = (settings or {}).get("num_chunks")
    if value not in (None, ""):
        return int(value)
    return DEFAULT_CHUNKS


def flag(settings, key):
    value = (settings or {}).get(key, os.environ.get("GEN3D_" + key.upper()))
    return str(value).lower() in ("1", "true", "yes", "on")


def apply_shape_speed(pipeline, settings):
    """Settings "flashvdm" (FlashVDM decoder; the presets turn it on for the turbo models) and "compile"
    (torch.compile of the DiT, VAE and conditioner; the first job then pays the compile time)."""
    applied = []
    if flag(settings, "flashvdm") and hasattr(pipeline, "enable_flashvdm"):
        # replace_vae=False: the libraries would fetch a turbo VAE from the hub by repository name; the turbo
        # models' own VAE is already the one loaded from their folder.
        pipeline.enable_flashvdm(enabled=True, replace_vae=False, mc_algo="mc")
        applied.append("flashvdm")
    if flag(settings, "compile") and hasattr(pipeline, "compile"):
        pipeline.compile()
        applied.append("compile")
    if applied:
        log("shape pipeline: %s" % ", ".join(applied))
    return applied


def mesh_processor_kind(package_folder):
    """'compiled' when hy3dgen's differentiable_renderer folder holds the built mesh_processor extension
    (Python imports it in place of mesh_processor.py), else 'python' (the slow pure-Python inpaint)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        if os.path.isfile(os.path.join(package_folder, "mesh_processor" + suffix)):
            return "compiled"
    return "python"
