"""The shape stage both Hunyuan libraries share: hy3dgen (2.0, 2mini) and hy3dshape (2.1) have the same
Hunyuan3DDiTFlowMatchingPipeline call and the same pymeshlab postprocessors, under different names."""

import contextlib
from dataclasses import dataclass

import numpy as np

from shared.errors import INTERNAL, Gen3DError

from . import base
from . import hunyuan_common as hc
from . import hunyuan_memory, hunyuan_speed


@dataclass
class ShapeModel:
    """A loaded shape pipeline and the library's mesh postprocessors."""

    pipeline: object
    floater_remover: object
    degenerate_remover: object
    face_reducer: object


def load_shape_model(package, root, subfolder, device, dtype, use_safetensors, paths=(), settings=None):
    """from_pretrained on a local folder (root/subfolder holds config.yaml and the checkpoint), with
    downloads blocked; `package` is the library's module holding the pipeline and postprocessors. The
    modules are built on the meta device and take the checkpoint's fp16 tensors (memory-mapped), so no
    fp32 copy of the model is ever made in host RAM (setting "lean_load" false: the library's own way)."""
    library = hc.import_library(package, "The %s shape pipeline" % package, paths)
    lean = str(hc.setting(settings, "lean_load", default="true")).lower() not in ("0", "false", "no")
    with hc.library_paths(paths), hc.offline({}), \
            (hunyuan_memory.lean_construction() if lean else contextlib.nullcontext()):
        pipeline = library.Hunyuan3DDiTFlowMatchingPipeline.from_pretrained(
            root, subfolder=subfolder, use_safetensors=use_safetensors, variant="fp16", device=str(device),
            dtype=dtype)
    hunyuan_speed.apply_shape_speed(pipeline, settings)
    return ShapeModel(pipeline, library.FloaterRemover(), library.DegenerateFaceRemover(), library.FaceReducer())


def library_call_arguments(request, job, num_chunks):
    """Every request field the shape pipeline takes, under the library's names."""
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


def generate_shape(engine, model, job, num_chunks):
    """Image -> closed mesh in our frame with at most face_count triangles."""
    request = job.request
    with hc.job_folder(job.work_dir, engine.name + "-shape"), hc.gpu_stage(engine, base.SHAPE, job.device):
        meshes = model.pipeline(image=hc.pil_image(job.image), **library_call_arguments(request, job, num_chunks))
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
