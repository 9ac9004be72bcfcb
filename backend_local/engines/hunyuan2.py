"""hunyuan3d-2, hunyuan3d-2mini and hunyuan3d-2mv: Tencent's Hunyuan3D 2.0 models through the `hy3dgen` package.

Shape: hy3dgen.shapegen.Hunyuan3DDiTFlowMatchingPipeline (tencent/Hunyuan3D-2, hunyuan3d-dit-v2-0 and its
-turbo; tencent/Hunyuan3D-2mini, hunyuan3d-dit-v2-mini and its -turbo), the variant chosen by the request's
preset (hunyuan_specs); tencent/Hunyuan3D-2mv, hunyuan3d-dit-v2-mv and its -turbo, takes the front and
the request's views as one dict. Texture (hunyuan3d-2 and 2mv; 2mini jobs paint with it or builtin):
hy3dgen.texgen.Hunyuan3DPaintPipeline, which paints an RGB albedo only, so roughness, metallic, normal and
AO come from the built-in texturer (hunyuan_texture).

hy3dgen exists as the PyPI wheel 2.0.2 and as GitHub main (same version number): main's painter takes a
`subfolder` and defaults it to the turbo paint model, the wheel's has no such argument. The painter is
always given hunyuan3d-paint-v2-0 explicitly where it takes the argument (detected by signature); the
ShapeVAE difference is handled in hunyuan_shape.
"""

import dataclasses
import inspect

import numpy as np

from shared.request import VIEW_AZIMUTHS

from . import base
from . import hunyuan_common as hc
from . import hunyuan_shape, hunyuan_specs as specs, hunyuan_speed, hunyuan_texture
from .builtin.multiview import azimuth_rotation

SHAPE_MODULES = ("hy3dgen", "diffusers", "transformers", "torchvision", "einops", "pymeshlab", "trimesh", "cv2",
                 "yaml")
PAINT_MODULES = ("hy3dgen", "diffusers", "transformers", "xatlas", "cv2", "trimesh")
RASTERIZER_MODULES = ("custom_rasterizer", "custom_rasterizer_kernel")
RASTERIZER_HINT = ("the painter's compiled CUDA rasterizer: `python -m backend_local install %s` builds it "
                   "(by hand: in a Hunyuan3D-2 checkout `cd hy3dgen/texgen/custom_rasterizer && pip install "
                   "--no-build-isolation -e .`, needs nvcc)")

PAINT_SUBFOLDER = "hunyuan3d-paint-v2-0"
PAINT_MODEL = hc.ModelFiles(specs.REPO_20, "",
                            ("%s/model_index.json" % PAINT_SUBFOLDER, "hunyuan3d-delight-v2-0/model_index.json"),
                            "Hunyuan3D-2 paint")
# The painter bakes at up to this size; its atlas is resampled into ours at the requested texture_size.
CHECKPOINT_FILES = ("config.yaml", "model.fp16.safetensors")


def shape_files(repo_id, subfolder, what):
    return hc.ModelFiles(repo_id, subfolder, CHECKPOINT_FILES, what)


def dit_files(spec, variant):
    """A shape variant's DiT folder. Both an engine's default shape_model and its variant_files name it
    here, so the two never describe the same folder differently."""
    return shape_files(spec.repo_id, variant.subfolder, "%s shape (%s)" % (spec.name, variant.subfolder))


def painter_arguments(paint_class):
    """from_pretrained's keyword arguments for the installed hy3dgen painter: GitHub main takes `subfolder`
    (defaulting to the turbo model), PyPI 2.0.2 does not (and always loads hunyuan3d-paint-v2-0)."""
    parameters = inspect.signature(paint_class.from_pretrained).parameters
    return {"subfolder": PAINT_SUBFOLDER} if "subfolder" in parameters else {}


class Hy3DGenEngine(hc.HunyuanEngine):
    """Shape (and optionally texture) from hy3dgen; subclasses name their spec."""

    spec = None
    remover_module = "hy3dgen.rembg"

    @classmethod
    def variant_files(cls, variant):
        """The weight folders a shape variant reads: its DiT and, for FlashVDM, its turbo VAE."""
        files = [dit_files(cls.spec, variant)]
        if variant.vae_subfolder:
            files.append(shape_files(variant.vae_repo_id or cls.spec.repo_id, variant.vae_subfolder,
                                     "%s turbo VAE (%s)" % (cls.spec.name, variant.vae_subfolder)))
        return files

    @classmethod
    def model_files(cls):
        """Every weight folder this engine may read (all presets' shape models, the painter's)."""
        files = [files for variant in cls.spec.shape.values() for files in cls.variant_files(variant)]
        if base.TEXTURE in cls.capabilities:
            files.append(PAINT_MODEL)
        return list({(f.repo_id, f.subfolder, f.files): f for f in files}.values())

    def _probe(self, stage, hints=None):
        return hc.import_chain_problem(self.name, "The %s %s library" % (self.name, stage),
                                       self.spec.import_chains[stage], hints=hints)

    def stage_problems(self, stage):
        if stage == base.SHAPE:
            missing = hc.missing_modules(SHAPE_MODULES)
            problems = [hc.modules_missing(missing, self.name)] if missing else [self._probe(base.SHAPE)]
            root, searched = hc.locate(self.shape_model, self.settings)
            if root is None:
                problems.append(hc.weights_missing(self.shape_model, searched, self.name))
            return [problem for problem in problems if problem]
        missing = hc.missing_modules(PAINT_MODULES)
        problems = [hc.modules_missing(missing, self.name)] if missing else []
        if hc.missing_modules(RASTERIZER_MODULES):
            problems.append("missing custom_rasterizer, " + RASTERIZER_HINT % self.name)
        elif not missing:
            problems.append(self._probe(base.TEXTURE, {"custom_rasterizer": RASTERIZER_HINT % self.name}))
        problems.append(self.cuda_problem())
        root, searched = hc.locate(PAINT_MODEL, self.settings)
        if root is None:
            problems.append(hc.weights_missing(PAINT_MODEL, searched, self.name))
        return [problem for problem in problems if problem]

    def variant_problems(self, stage, variant):
        if stage != base.SHAPE or variant is None:
            return []
        problems = []
        for files in self.variant_files(variant):
            root, searched = hc.locate(files, self.settings)
            if root is None:
                problems.append(hc.weights_missing(files, searched, self.name))
        return problems

    def load_stage(self, stage, device, variant=None):
        if stage == base.SHAPE:
            variant = variant or self.spec.shape[specs.BALANCED]
            dit, *vae = self.variant_files(variant)
            root, _ = hc.locate(dit, self.settings)
            vae_root = hc.locate(vae[0], self.settings)[0] if vae else None
            return hunyuan_shape.load_shape_model("hy3dgen.shapegen", root, variant, device,
                                                  hc.library_dtype(device, self.settings), use_safetensors=True,
                                                  engine=self.name, vae_root=vae_root,
                                                  settings=self.settings)
        problem = self.painter_device_problem(device)
        if problem:
            raise problem
        root, _ = hc.locate(PAINT_MODEL, self.settings)
        texgen = hc.import_library("hy3dgen.texgen", "The Hunyuan3D-2 painter", engine=self.name)
        paint_class = texgen.Hunyuan3DPaintPipeline
        with hc.on_device(device), hc.offline({PAINT_MODEL.repo_id: root}), hc.trusted_local_pipelines():
            return paint_class.from_pretrained(root, **painter_arguments(paint_class))

    def generate_shape(self, job):
        job.progress("shape", 0.02, "loading %s" % self.name)
        variant = specs.shape_variant(self.name, job.request.preset)
        model = self.model(base.SHAPE, job.device, variant)
        return hunyuan_shape.generate_shape(self, model, job, hunyuan_speed.shape_chunks(self.settings),
                                            image=self.library_image(job))

    def library_image(self, job):
        """What the shape pipeline's `image` is given (None: the front image as PIL)."""
        return None

    def generate_texture(self, job, shape):
        import trimesh

        painter, size = hunyuan_texture.ready_painter(self, job, "loading the Hunyuan3D-2 painter")
        mesh = trimesh.Trimesh(shape.vertices, shape.faces, process=False)
        with hc.job_folder(job.work_dir, self.name + "-paint"), hc.gpu_stage(self, base.TEXTURE, job.device), \
                hc.on_device(job.device):
            baking = hunyuan_texture.start_bake(job, shape, size)
            job.progress("texture", 0.1, "painting the views")
            painted = painter(mesh, image=hc.pil_image(job.image))
        result = {
            "vertices": np.asarray(painted.vertices, np.float64), "faces": np.asarray(painted.faces, np.int64),
            "uvs": np.asarray(painted.visual.uv, np.float64), "uv_faces": np.asarray(painted.faces, np.int64),
            "images": {"albedo": hunyuan_texture.read_image(painted.visual.material.image, 3)},
        }
        return hunyuan_texture.painted_result(job, shape, result, size, baking)


class Hunyuan2Engine(Hy3DGenEngine):
    name = "hunyuan3d-2"
    spec = specs.HUNYUAN_20
    shape_model = dit_files(spec, spec.shape[specs.BALANCED])
    capabilities = frozenset({base.SHAPE, base.TEXTURE, base.TEXTURE_EXISTING})
    vram_gb = {base.SHAPE: 6.0, base.TEXTURE: 16.0}
    stage_sizes = {base.SHAPE: (3.2, 2.4, 2.5), base.TEXTURE: (6.0, 3.5, 8.0)}


class Hunyuan2MiniEngine(Hy3DGenEngine):
    name = "hunyuan3d-2mini"
    spec = specs.HUNYUAN_MINI
    shape_model = dit_files(spec, spec.shape[specs.BALANCED])
    capabilities = frozenset({base.SHAPE})
    vram_gb = {base.SHAPE: 5.0}
    stage_sizes = {base.SHAPE: (1.6, 1.0, 2.5)}


# Our view names (DESIGN.md: the camera at +X is `right`) -> hy3dgen's MVImageProcessorV2 keys, which name
# the side of the object the camera sees: the camera at +X sees the object's left side (the object faces
# +Z, so its left hand is at +X), so our `right` is its `left` and our `left` (-X) its `right`.
LIBRARY_VIEW_NAMES = {"right": "left", "back": "back", "left": "right"}


def library_views(front, views):
    """The multi-view pipeline's `image` dict: "front" and each given view under hy3dgen's name, as PIL RGBA."""
    images = {"front": hc.pil_image(front)}
    for name in sorted(views):
        images[LIBRARY_VIEW_NAMES[name]] = hc.pil_image(views[name])
    return images


def registered_views(vertices, front, views):
    """The front and the extra views placed on the library's mesh for the texturers. The mesh is upright
    in our frame, so each view's camera is the front's turned about +Y by the view's azimuth; each image
    was cut out and framed on its own, so its framing comes from matching the bounding box of the mesh
    seen from there to the view's silhouette (as base.fit_view frames the front)."""
    mapping = base.fit_view(vertices, front[..., 3])
    extra = {}
    for name, rgba in views.items():
        rotation = azimuth_rotation(VIEW_AZIMUTHS[name])
        extra[name] = base.ExtraView(rotation, base.fit_view(vertices @ rotation.T, rgba[..., 3]), rgba)
    return mapping, extra


class Hunyuan2MVEngine(Hy3DGenEngine):
    """Hunyuan3D-2mv: the front and up to three views (request `views`) condition one shape. Textures: the
    Hunyuan3D-2 painter (one image: the front, as upstream's multi-view example paints), or with
    texture_engine builtin every view projected onto the mesh (registered_views)."""

    name = "hunyuan3d-2mv"
    spec = specs.HUNYUAN_MV
    shape_model = dit_files(spec, spec.shape[specs.BALANCED])
    capabilities = frozenset({base.SHAPE, base.TEXTURE, base.MULTIVIEW})
    # The same 1.1 B DiT, ShapeVAE and DINOv2 as hunyuan3d-2 (upstream: 6 GB shape, 16 GB with the
    # painter); four views lengthen the DiT's image context fourfold, which the working memory covers.
    # So its sizes are hunyuan3d-2's, taken from there rather than written twice.
    vram_gb = Hunyuan2Engine.vram_gb
    stage_sizes = Hunyuan2Engine.stage_sizes

    def library_image(self, job):
        return library_views(job.image, job.views)

    def generate_shape(self, job):
        shape = super().generate_shape(job)
        view, views = registered_views(shape.vertices, job.image, job.views)
        return dataclasses.replace(shape, view=view, views=views or None)
