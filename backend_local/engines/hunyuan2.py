"""hunyuan3d-2 and hunyuan3d-2mini: Tencent's Hunyuan3D 2.0 models through the `hy3dgen` package (PyPI).

Shape: hy3dgen.shapegen.Hunyuan3DDiTFlowMatchingPipeline (tencent/Hunyuan3D-2, hunyuan3d-dit-v2-0;
tencent/Hunyuan3D-2mini, hunyuan3d-dit-v2-mini). Texture (hunyuan3d-2 only; 2mini jobs paint with it or
builtin): hy3dgen.texgen.Hunyuan3DPaintPipeline, which paints an RGB albedo only, so roughness, metallic,
normal and AO come from the built-in texturer (hunyuan_texture).
"""

import numpy as np

from . import base
from . import hunyuan_common as hc
from . import hunyuan_shape, hunyuan_speed, hunyuan_texture

SHAPE_PACKAGES = ("hy3dgen", "diffusers", "transformers", "torchvision", "einops", "pymeshlab", "trimesh", "cv2",
                  "yaml")
PAINT_PACKAGES = ("hy3dgen", "diffusers", "transformers", "xatlas", "cv2", "trimesh")
RASTERIZER_MODULES = ("custom_rasterizer", "custom_rasterizer_kernel")
INSTALL_HINT = "pip install 'gen3d[hunyuan]'"
RASTERIZER_HINT = ("the painter's compiled CUDA rasterizer: in a Hunyuan3D-2 checkout run `cd "
                   "hy3dgen/texgen/custom_rasterizer && python setup.py install` (needs nvcc)")

PAINT_MODEL = hc.ModelFiles("tencent/Hunyuan3D-2", "",
                            ("hunyuan3d-paint-v2-0/model_index.json", "hunyuan3d-delight-v2-0/model_index.json"),
                            "Hunyuan3D-2 paint")
# The painter bakes at up to this size; its atlas is resampled into ours at the requested texture_size.
MAX_PAINT_TEXTURE = 4096


class Hy3DGenEngine(hc.HunyuanEngine):
    """Shape (and optionally texture) from hy3dgen; subclasses name the shape model."""

    shape_model = None
    remover_module = "hy3dgen.rembg"

    def stage_problems(self, stage):
        if stage == base.SHAPE:
            missing = hc.missing_modules(SHAPE_PACKAGES)
            problems = [hc.modules_missing(missing, INSTALL_HINT)] if missing else []
            root, searched = hc.locate(self.shape_model, self.settings)
            if root is None:
                problems.append(hc.weights_missing(self.shape_model, searched))
            return problems
        missing = hc.missing_modules(PAINT_PACKAGES)
        problems = [hc.modules_missing(missing, INSTALL_HINT)] if missing else []
        if hc.missing_modules(RASTERIZER_MODULES):
            problems.append("missing custom_rasterizer, " + RASTERIZER_HINT)
        problems.append(self.cuda_problem())
        root, searched = hc.locate(PAINT_MODEL, self.settings)
        if root is None:
            problems.append(hc.weights_missing(PAINT_MODEL, searched))
        return [problem for problem in problems if problem]

    def load_stage(self, stage, device):
        if stage == base.SHAPE:
            root, _ = hc.locate(self.shape_model, self.settings)
            return hunyuan_shape.load_shape_model("hy3dgen.shapegen", root, self.shape_model.subfolder, device,
                                                  hc.library_dtype(device, self.settings), use_safetensors=True,
                                                  settings=self.settings)
        problem = self.painter_device_problem(device)
        if problem:
            raise problem
        root, _ = hc.locate(PAINT_MODEL, self.settings)
        texgen = hc.import_library("hy3dgen.texgen", "The Hunyuan3D-2 painter")
        with hc.on_device(device), hc.offline({PAINT_MODEL.repo_id: root}), hc.trusted_local_pipelines():
            return texgen.Hunyuan3DPaintPipeline.from_pretrained(root)

    def generate_shape(self, job):
        job.progress("shape", 0.02, "loading %s" % self.name)
        model = self.model(base.SHAPE, job.device)
        return hunyuan_shape.generate_shape(self, model, job, hunyuan_speed.shape_chunks(self.settings, job.device))

    def generate_texture(self, job, shape):
        import trimesh

        job.progress("texture", 0.02, "loading the Hunyuan3D-2 painter")
        painter = self.model(base.TEXTURE, job.device)
        size = job.request.texture_size
        painter.config.texture_size = min(2 * size, MAX_PAINT_TEXTURE)
        painter.render.set_default_texture_resolution(painter.config.texture_size)
        mesh = trimesh.Trimesh(shape.vertices, shape.faces, process=False)
        with hc.job_folder(job.work_dir, self.name + "-paint"), hc.gpu_stage(self, base.TEXTURE, job.device), \
                hc.on_device(job.device):
            job.progress("texture", 0.1, "painting the views")
            painted = painter(mesh, image=hc.pil_image(job.image))
        result = {
            "vertices": np.asarray(painted.vertices, np.float64), "faces": np.asarray(painted.faces, np.int64),
            "uvs": np.asarray(painted.visual.uv, np.float64), "uv_faces": np.asarray(painted.faces, np.int64),
            "images": {"albedo": hunyuan_texture.read_image(painted.visual.material.image, 3)},
        }
        return hunyuan_texture.painted_result(job, shape, result, size)


class Hunyuan2Engine(Hy3DGenEngine):
    name = "hunyuan3d-2"
    capabilities = frozenset({base.SHAPE, base.TEXTURE})
    vram_gb = {base.SHAPE: 6.0, base.TEXTURE: 16.0}
    stage_sizes = {base.SHAPE: (3.2, 2.4, 2.5), base.TEXTURE: (6.0, 3.5, 8.0)}
    shape_model = hc.ModelFiles("tencent/Hunyuan3D-2", "hunyuan3d-dit-v2-0", ("config.yaml", "model.fp16.safetensors"),
                                "Hunyuan3D-2 shape")


class Hunyuan2MiniEngine(Hy3DGenEngine):
    name = "hunyuan3d-2mini"
    capabilities = frozenset({base.SHAPE})
    vram_gb = {base.SHAPE: 5.0}
    stage_sizes = {base.SHAPE: (1.6, 1.0, 2.5)}
    shape_model = hc.ModelFiles("tencent/Hunyuan3D-2mini", "hunyuan3d-dit-v2-mini",
                                ("config.yaml", "model.fp16.safetensors"), "Hunyuan3D-2mini shape")
