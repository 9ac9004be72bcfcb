"""The shape stage both Hunyuan libraries share: hy3dgen (2.0, 2mini) and hy3dshape (2.1) have the same
Hunyuan3DDiTFlowMatchingPipeline call and the same pymeshlab postprocessors, under different names.

Also the two hy3dgen flavours: the PyPI wheel (2.0.2) and GitHub main (which still says 2.0.2) differ in
ShapeVAE's constructor (main adds the point-cloud encoder's arguments: num_encoder_layers, pc_size, ...)
and in how strictly its weights load. A config written for one must load on the other; the encoder is
never used to generate, so its arguments and weights are dropped where the installed class lacks them.
"""

import contextlib
import dataclasses
import functools
import importlib
import inspect
import os
from dataclasses import dataclass

import numpy as np

from shared.errors import ENGINE_UNAVAILABLE, INTERNAL, Gen3DError

from . import base
from . import hunyuan_common as hc
from . import hunyuan_memory, hunyuan_speed

ENCODER_PREFIX = "encoder."
FLASHVDM_MC_ALGO = "mc"        # upstream's default; "dmc" needs the optional diso package


@dataclass
class ShapeModel:
    """A loaded shape pipeline, the library's mesh postprocessors and the variant it runs."""

    pipeline: object
    floater_remover: object
    degenerate_remover: object
    face_reducer: object
    variant: object = None


def resolve_request(job, variant):
    """Fill the request's null fields with the variant's tuned values. The job keeps the resolved request,
    so meta.json records the values that ran."""
    if job.request.num_inference_steps is None:
        job.request = dataclasses.replace(job.request, num_inference_steps=variant.steps)
    return job.request


# -- ShapeVAE across hy3dgen flavours


def accepted_arguments(cls):
    """Keyword names cls.__init__ takes, or None when it takes any (**kwargs)."""
    parameters = inspect.signature(cls.__init__).parameters
    if any(p.kind == p.VAR_KEYWORD for p in parameters.values()):
        return None
    return set(parameters) - {"self"}


def vae_has_encoder(vae_class):
    """GitHub main's ShapeVAE builds the point-cloud encoder; the PyPI 2.0.2 one does not."""
    accepted = accepted_arguments(vae_class)
    return accepted is None or "num_encoder_layers" in accepted


def vae_arguments(vae_class, params):
    """The config's ShapeVAE arguments the installed class takes (an older class drops encoder settings)."""
    accepted = accepted_arguments(vae_class)
    return dict(params) if accepted is None else {k: v for k, v in params.items() if k in accepted}


def load_vae_weights(vae, state, strict=True):
    """Load a ShapeVAE state dict whether or not the checkpoint and the class have the encoder: encoder
    weights the class lacks are dropped, encoder weights the checkpoint lacks stay as built (the
    released checkpoints carry none). With `strict` (as the library asked), anything else that does not
    match is an error, as it would have been."""
    own = set(vae.state_dict())
    state = {key: value for key, value in state.items() if key in own or not key.startswith(ENCODER_PREFIX)}
    missing, unexpected = vae.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith(ENCODER_PREFIX)]
    if strict and (missing or unexpected):
        raise Gen3DError(ENGINE_UNAVAILABLE, "The shape VAE weights do not fit the installed library's ShapeVAE "
                         "(missing %s, unexpected %s); install the pinned library version." % (
                             ", ".join(missing[:5]) or "none", ", ".join(unexpected[:5]) or "none"),
                         stage="shape", retryable=False)
    return vae


@contextlib.contextmanager
def compatible_vae(package):
    """While the pipeline loads: a ShapeVAE config with arguments the installed class lacks loads without
    them, and its weights load with load_vae_weights' rules (the libraries build the VAE through their
    pipelines module's instantiate_from_config and load it strictly)."""
    try:
        pipelines = importlib.import_module(package + ".pipelines")
        vae_class = importlib.import_module(package + ".models.autoencoders").ShapeVAE
    except (ImportError, AttributeError):      # a library laid out otherwise loads as it is
        pipelines = vae_class = None
    original = getattr(pipelines, "instantiate_from_config", None)
    if original is None or vae_class is None:
        yield
        return

    @functools.wraps(original)
    def instantiate(config, **kwargs):
        if not str(config.get("target", "")).endswith("ShapeVAE"):
            return original(config, **kwargs)
        config = dict(config, params=vae_arguments(vae_class, config.get("params", {})))
        vae = original(config, **kwargs)
        vae.load_state_dict = functools.partial(_tolerant_load, vae)
        return vae

    pipelines.instantiate_from_config = instantiate
    try:
        yield
    finally:
        pipelines.instantiate_from_config = original


def _tolerant_load(vae, state, strict=True, **_kwargs):
    del vae.load_state_dict          # back to the module's own method for anything later
    load_vae_weights(vae, state, strict)
    return [], []


def load_turbo_vae(package, folder, device, dtype, use_safetensors=True):
    """The turbo VAE FlashVDM decodes with (config.yaml + model.fp16.safetensors in `folder`), built for the
    installed ShapeVAE."""
    import torch
    import yaml

    vae_class = importlib.import_module(package + ".models.autoencoders").ShapeVAE
    with open(os.path.join(folder, "config.yaml")) as handle:
        config = yaml.safe_load(handle)
    vae = vae_class(**vae_arguments(vae_class, config.get("params", {})))
    if use_safetensors:
        import safetensors.torch

        state = safetensors.torch.load_file(os.path.join(folder, "model.fp16.safetensors"), device="cpu")
    else:
        state = torch.load(os.path.join(folder, "model.fp16.ckpt"), map_location="cpu", weights_only=True)
    load_vae_weights(vae, state)
    return vae.to(device=device, dtype=dtype)


# -- loading and running


def load_shape_model(package, root, variant, device, dtype, use_safetensors, paths=(), engine="ENGINE",
                     vae_root=None, settings=None):
    """from_pretrained on a local folder (root/<variant.subfolder> holds config.yaml and the checkpoint),
    with downloads blocked; FlashVDM with the variant's turbo VAE (from vae_root/<vae_subfolder>) when the
    variant asks for it. `package` is the library's module holding the pipeline and postprocessors. The
    modules are built on the meta device and take the checkpoint's fp16 tensors (memory-mapped), so no fp32
    copy of the model is ever made in host RAM (setting "lean_load" false: the library's own way)."""
    library = hc.import_library(package, "The %s shape pipeline" % package, paths, engine)
    lean = str(hc.setting(settings, "lean_load", default="true")).lower() not in ("0", "false", "no")
    with hc.library_paths(paths), hc.offline({}), compatible_vae(package), \
            (hunyuan_memory.lean_construction() if lean else contextlib.nullcontext()):
        pipeline = library.Hunyuan3DDiTFlowMatchingPipeline.from_pretrained(
            root, subfolder=variant.subfolder, use_safetensors=use_safetensors, variant="fp16", device=str(device),
            dtype=dtype)
        if variant.flashvdm:
            if variant.vae_subfolder:
                # Upstream swaps in the turbo VAE only for hub ids it recognises by name; ours is a local
                # folder, so it is loaded here and FlashVDM told to keep it.
                pipeline.vae = load_turbo_vae(package, os.path.join(vae_root or root, variant.vae_subfolder),
                                              device, dtype, use_safetensors)
            pipeline.enable_flashvdm(mc_algo=FLASHVDM_MC_ALGO, replace_vae=False)
    hunyuan_speed.apply_shape_speed(pipeline, settings)
    return ShapeModel(pipeline, library.FloaterRemover(), library.DegenerateFaceRemover(), library.FaceReducer(),
                      variant)


def library_call_arguments(request, job, num_chunks):
    """Every request field the shape pipeline takes, under the library's names (request already resolved)."""
    return dict(
        num_inference_steps=request.num_inference_steps,
        guidance_scale=request.guidance_scale,
        generator=hc.seeded_generator(request.seed),
        octree_resolution=request.octree_resolution,
        num_chunks=num_chunks,
        callback=hc.step_callback(job, "shape", request.num_inference_steps),
        callback_steps=1,
        enable_pbar=False,
    )


def generate_shape(engine, model, job, num_chunks, image=None):
    """Image -> closed mesh in our frame with at most face_count triangles. `image`: what the pipeline is
    given instead of the front image (the multi-view pipeline's dict of views)."""
    request = resolve_request(job, model.variant)
    if image is None:
        image = hc.pil_image(job.image)
    with hc.job_folder(job.work_dir, engine.name + "-shape"), hc.gpu_stage(engine, base.SHAPE, job.device):
        meshes = model.pipeline(image=image, **library_call_arguments(request, job, num_chunks))
        mesh = meshes[0] if meshes else None
        if mesh is None or len(mesh.faces) == 0:
            raise Gen3DError(INTERNAL, "%s produced no surface for this image; try another seed or more "
                             "num_inference_steps." % engine.name, stage="shape")
        job.progress("shape", 0.85, "removing floaters and reducing to %d faces" % request.face_count)
        mesh = model.floater_remover(mesh)
        mesh = model.degenerate_remover(mesh)
        mesh = model.face_reducer(mesh, max_facenum=request.face_count)
    vertices, faces = hc.closed_mesh(np.asarray(mesh.vertices), np.asarray(mesh.faces), request.face_count)
    return base.ShapeResult(hc.to_output_frame(vertices), faces)
