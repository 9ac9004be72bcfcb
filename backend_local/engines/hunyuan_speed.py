"""Speed options upstream offers, as engine settings: the surface-decoding batch (num_chunks), FlashVDM
(the turbo VAE's fast decoder), torch.compile, and 2.0's compiled mesh_processor."""

import importlib.machinery
import os
import sys

from .. import vram_plan

# GPU memory one query point costs while the VAE decodes the surface (fp16 activations of the width-1024
# geometry decoder: query projection, cross-attention to the latents, 4x MLP), measured with some margin.
BYTES_PER_QUERY = 32 * 1024
SAFETY_GB = 1.0


def log(message):
    print("[gen3d] %s" % message, file=sys.stderr, flush=True)


def shape_chunks(settings, device):
    """num_chunks for the shape call: the engine setting when given, else as many points per batch as the
    usable GPU memory holds (8000 .. 200000; upstream's call default is 8000, its apps use 200000)."""
    value = (settings or {}).get("num_chunks")
    if value not in (None, ""):
        return int(value)
    if getattr(device, "type", "cpu") != "cuda":
        return 8000
    return vram_plan.decode_chunks(vram_plan.usable_gb(device) - SAFETY_GB, BYTES_PER_QUERY)


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
