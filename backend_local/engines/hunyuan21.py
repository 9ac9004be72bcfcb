"""hunyuan3d-2.1: Tencent's Hunyuan3D 2.1, shape from hy3dshape and PBR texture from hy3dpaint.

Neither package is on PyPI: both are imported from a checkout of the Tencent-Hunyuan/Hunyuan3D-2.1
repository (setting "repo" or $GEN3D_HUNYUAN21_REPO), whose hy3dshape/ and hy3dpaint/ folders go on
sys.path while the library runs. The painter's albedo and metallic-roughness textures are taken from its
renderer in memory (no JPEG round trip) and carried into our manifest and GLB (hunyuan_texture), with the
normal and AO maps baked by the built-in texturer. 2.1 has no turbo model (hunyuan_specs).
"""

import glob
import os

from . import base
from . import hunyuan_common as hc
from . import hunyuan_shape, hunyuan_specs as specs, hunyuan_speed, hunyuan_texture

REPO_ID = specs.REPO_21
SPEC = specs.HUNYUAN_21
SHAPE_MODEL = hc.ModelFiles(REPO_ID, SPEC.shape[specs.BALANCED].subfolder, ("config.yaml", "model.fp16.ckpt"),
                            "Hunyuan3D-2.1 shape")
PAINT_MODEL = hc.ModelFiles(REPO_ID, "hunyuan3d-paintpbr-v2-1", ("model_index.json",), "Hunyuan3D-2.1 PBR paint")
DINO_MODEL = hc.ModelFiles(specs.DINO_GIANT, "", ("config.json", "model.safetensors|pytorch_model.bin"),
                           "DINOv2-giant (the painter's image encoder)")
REALESRGAN_FILE = "RealESRGAN_x4plus.pth"

SHAPE_MODULES = ("diffusers", "transformers", "torchvision", "timm", "einops", "omegaconf", "pymeshlab", "trimesh",
                 "cv2", "yaml")
PAINT_MODULES = ("diffusers", "transformers", "torchvision", "omegaconf", "xatlas", "pymeshlab", "trimesh", "cv2",
                 "realesrgan", "basicsr", "pytorch_lightning")
RASTERIZER_MODULES = ("custom_rasterizer", "custom_rasterizer_kernel")
RASTERIZER_HINT = ("the painter's compiled CUDA rasterizer: `python -m backend_local install hunyuan3d-2.1` builds it "
                   "(by hand: `cd hy3dpaint/custom_rasterizer && pip install --no-build-isolation -e .` in the "
                   "Hunyuan3D-2.1 checkout, needs nvcc)")
INPAINT_HINT = ("the painter's compiled mesh_inpaint_processor: `python -m backend_local install hunyuan3d-2.1` "
                "builds it (by hand: `cd hy3dpaint/DifferentiableRenderer && bash compile_mesh_painter.sh` in the "
                "Hunyuan3D-2.1 checkout)")
BPY_WHY = ("the Hunyuan3D-2.1 painter's GLB conversion needs Blender's bpy; Gen3D calls it with save_glb=False")


class Hunyuan21Engine(hc.HunyuanEngine):
    name = "hunyuan3d-2.1"
    capabilities = frozenset({base.SHAPE, base.TEXTURE, base.TEXTURE_EXISTING})
    vram_gb = {base.SHAPE: 10.0, base.TEXTURE: 21.0}
    # (weights, largest component, working memory) in GB for the planner before a stage is loaded, as measured
    # at full size on the H200 (bench/results/hunyuan_fullsize_h200.jsonl); the shape's working memory is
    # what decoding needs at the smallest num_chunks (the decode batch grows with the memory left)
    stage_sizes = {base.SHAPE: (6.9, 6.1, 2.5), base.TEXTURE: (6.6, 3.9, 6.5)}
    remover_module = "hy3dshape.rembg"

    # -- where things are

    @classmethod
    def model_files(cls):
        """Every weight folder this engine may read (2.1 has one shape model for all presets)."""
        return [SHAPE_MODEL, PAINT_MODEL, DINO_MODEL]

    def repo(self):
        path = hc.setting(self.settings, "repo", hc.REPO21_ENV)
        return os.path.abspath(os.path.expanduser(path)) if path else None

    def library_folders(self):
        repo = self.repo()
        if not repo:
            return ()
        return (os.path.join(repo, "hy3dshape"), os.path.join(repo, "hy3dpaint"), repo)

    def realesrgan_candidates(self):
        configured = hc.setting(self.settings, "realesrgan")
        weights = hc.setting(self.settings, "weights_dir", hc.WEIGHTS_ENV)
        candidates = [configured] if configured else []
        if weights:
            candidates.append(os.path.join(os.path.expanduser(weights), REALESRGAN_FILE))
        if self.repo():
            candidates.append(os.path.join(self.repo(), "hy3dpaint", "ckpt", REALESRGAN_FILE))
        return candidates

    def _repo_problem(self, part, marker):
        repo = self.repo()
        if not repo:
            return ("the Hunyuan3D-2.1 code is not configured: set %s (or the engine setting 'repo') to a checkout "
                    "of the Tencent-Hunyuan/Hunyuan3D-2.1 repository" % hc.REPO21_ENV)
        if not os.path.isfile(os.path.join(repo, part, marker)):
            return "%s is not a Hunyuan3D-2.1 checkout: %s/%s is missing" % (repo, part, marker)
        return ""

    # -- availability

    def _probe(self, stage):
        return hc.import_chain_problem(
            self.name, "The Hunyuan3D-2.1 %s library" % ("shape" if stage == base.SHAPE else "paint"),
            SPEC.import_chains[stage], self.library_folders(), placeholders=("bpy",),
            hints={"custom_rasterizer": RASTERIZER_HINT, "mesh_inpaint_processor": INPAINT_HINT})

    def stage_problems(self, stage):
        folders = self.library_folders()
        if stage == base.SHAPE:
            repo_problem = self._repo_problem("hy3dshape", os.path.join("hy3dshape", "pipelines.py"))
            problems = [repo_problem]
            missing = hc.missing_modules(SHAPE_MODULES)
            problems.append(hc.modules_missing(missing, self.name) if missing else "")
            if not repo_problem and not missing:
                problems.append(self._probe(base.SHAPE))
            root, searched = hc.locate(SHAPE_MODEL, self.settings)
            problems.append("" if root else hc.weights_missing(SHAPE_MODEL, searched, self.name))
            return [problem for problem in problems if problem]

        repo_problem = self._repo_problem("hy3dpaint", "textureGenPipeline.py")
        problems = [repo_problem]
        missing = hc.missing_modules(PAINT_MODULES)
        problems.append(hc.modules_missing(missing, self.name) if missing else "")
        rasterizer_missing = hc.missing_modules(RASTERIZER_MODULES)
        if rasterizer_missing:
            problems.append("missing custom_rasterizer, " + RASTERIZER_HINT)
        inpaint_missing = folders and not glob.glob(
            os.path.join(folders[1], "DifferentiableRenderer", "mesh_inpaint_processor*.so"))
        if inpaint_missing:
            problems.append("missing " + INPAINT_HINT)
        if not (repo_problem or missing or rasterizer_missing or inpaint_missing):
            problems.append(self._probe(base.TEXTURE))
        problems.append(self.cuda_problem())
        for model in (PAINT_MODEL, DINO_MODEL):
            root, searched = hc.locate(model, self.settings)
            problems.append("" if root else hc.weights_missing(model, searched, self.name))
        if not any(os.path.isfile(path) for path in self.realesrgan_candidates()):
            problems.append("the painter's upscaler checkpoint %s was not found; looked at: %s (`%s` fetches it)" % (
                REALESRGAN_FILE, "; ".join(self.realesrgan_candidates()) or "(no repo or weights folder configured)",
                specs.install_command(self.name)))
        return [problem for problem in problems if problem]

    # -- loading

    def load_stage(self, stage, device, variant=None):
        folders = self.library_folders()
        if stage == base.SHAPE:
            root, _ = hc.locate(SHAPE_MODEL, self.settings)
            return hunyuan_shape.load_shape_model("hy3dshape", root, variant or SPEC.shape[specs.BALANCED], device,
                                                  hc.library_dtype(device, self.settings), use_safetensors=False,
                                                  paths=folders, engine=self.name, settings=self.settings)
        problem = self.painter_device_problem(device)
        if problem:
            raise problem
        return self._load_painter(device, folders)

    def _load_painter(self, device, folders):
        paint_root, _ = hc.locate(PAINT_MODEL, self.settings)
        dino_root, _ = hc.locate(DINO_MODEL, self.settings)
        repo = self.repo()
        with hc.library_paths(folders), hc.on_device(device), hc.offline({REPO_ID: paint_root}), \
                hc.trusted_local_pipelines():
            hc.import_library("torchvision_fix", "The Hunyuan3D-2.1 torchvision fix", engine=self.name).apply_fix()
            # Its mesh_utils imports Blender's bpy at the top for the OBJ->GLB conversion (save_glb), which
            # Gen3D never asks for (it writes the GLB itself): bpy is only a placeholder when not installed.
            with hc.placeholder_modules(["bpy"], BPY_WHY):
                module = hc.import_library("textureGenPipeline", "The Hunyuan3D-2.1 painter", engine=self.name)
            config = module.Hunyuan3DPaintConfig(int(hc.setting(self.settings, "paint_views", default=6)),
                                                 int(hc.setting(self.settings, "paint_resolution", default=512)))
            # The library's defaults are paths relative to the repo and hub ids; ours are absolute and local.
            config.multiview_cfg_path = os.path.join(repo, "hy3dpaint", "cfgs", "hunyuan-paint-pbr.yaml")
            config.custom_pipeline = os.path.join(repo, "hy3dpaint", "hunyuanpaintpbr")
            config.realesrgan_ckpt_path = next(p for p in self.realesrgan_candidates() if os.path.isfile(p))
            config.dino_ckpt_path = dino_root
            config.multiview_pretrained_path = REPO_ID
            return module.Hunyuan3DPaintPipeline(config)

    # -- stages

    def generate_shape(self, job):
        job.progress("shape", 0.02, "loading %s" % self.name)
        model = self.model(base.SHAPE, job.device, specs.shape_variant(self.name, job.request.preset))
        with hc.library_paths(self.library_folders()):
            return hunyuan_shape.generate_shape(self, model, job, hunyuan_speed.shape_chunks(self.settings))

    def generate_texture(self, job, shape):
        import trimesh

        painter, size = hunyuan_texture.ready_painter(self, job, "loading the Hunyuan3D-2.1 PBR painter")
        with hc.library_paths(self.library_folders()), hc.job_folder(job.work_dir, self.name + "-paint") as folder, \
                hc.gpu_stage(self, base.TEXTURE, job.device), hc.on_device(job.device):
            mesh_path = os.path.join(folder, "shape.obj")
            trimesh.Trimesh(shape.vertices, shape.faces, process=False).export(mesh_path)
            baking = hunyuan_texture.start_bake(job, shape, size)
            job.progress("texture", 0.1, "painting albedo, metallic and roughness")
            obj_path = painter(mesh_path=mesh_path, image_path=hc.pil_image(job.image),
                               output_mesh_path=os.path.join(folder, "textured_mesh.obj"), use_remesh=False,
                               save_glb=False)
            # The painter's own files are JPEGs and its map_Pm is the MR image's red channel, which is the
            # constant the model was trained with (see hunyuan_texture.painted_from_render): read its
            # renderer's textures instead, falling back to the OBJ's albedo and roughness.
            painted = hunyuan_texture.painted_from_render(painter.render) or \
                hunyuan_texture.read_textured_obj(obj_path)
        return hunyuan_texture.painted_result(job, shape, painted, size, baking)
