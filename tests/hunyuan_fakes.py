"""Test doubles for the Hunyuan libraries (hy3dgen, hy3dshape, hy3dpaint), which CI does not have.

Each fake has the real call signature, records what it was called with, and returns real data of the
library's kind (trimesh meshes, a textured OBJ with its image files), so our adapters run unchanged:
    install_library(monkeypatch, "hy3dgen")  ->  FakeLibrary with .calls
Nothing here is used outside tests.
"""

import os
import sys
import types

import numpy as np
import torch
import trimesh
from PIL import Image

from backend_local.engines import hunyuan_common as hc
from backend_local.mesh_ops import decimate


def raw_mesh(open_mesh=False):
    """What a library's marching cubes hands back: a fine, off-centre, unscaled closed surface
    (optionally with a hole, as when the object touches the decoding box)."""
    mesh = trimesh.creation.icosphere(subdivisions=4, radius=0.4)
    mesh.apply_scale((1.0, 1.5, 0.8))
    mesh.apply_translation((0.1, -0.2, 0.05))
    if open_mesh:
        mesh.update_faces(np.arange(len(mesh.faces)) >= 6)
        mesh.remove_unreferenced_vertices()
    return mesh


class FakeLibrary:
    """Shared record of every call the adapters made into the fake library."""

    def __init__(self):
        self.calls = []
        self.shape_error = None        # an exception the next shape call raises, once
        self.open_mesh = False

    def record(self, name, **arguments):
        self.calls.append((name, arguments))

    def named(self, name):
        return [arguments for call, arguments in self.calls if call == name]


def shape_vae_class(library, flavour):
    """hy3dgen's ShapeVAE as each flavour builds it (keyword-only, no **kwargs): GitHub main takes the
    point-cloud encoder's arguments and has its weights, the PyPI 2.0.2 wheel has neither."""
    if flavour == "main":
        class ShapeVAE(torch.nn.Module):
            def __init__(self, *, num_latents, embed_dim, width, heads, num_decoder_layers, num_encoder_layers=8,
                         pc_size=5120, pc_sharpedge_size=5120, scale_factor=1.0):
                super().__init__()
                library.record("vae_init", flavour=flavour, num_latents=num_latents, width=width,
                               num_encoder_layers=num_encoder_layers)
                self.encoder = torch.nn.Linear(3, width)
                self.post_kl = torch.nn.Linear(embed_dim, width)
                self.flashvdm = False

            def enable_flashvdm_decoder(self, enabled=True, adaptive_kv_selection=True, topk_mode="mean",
                                        mc_algo="mc"):
                self.flashvdm = enabled
    else:
        class ShapeVAE(torch.nn.Module):
            def __init__(self, *, num_latents, embed_dim, width, heads, num_decoder_layers, scale_factor=1.0):
                super().__init__()
                library.record("vae_init", flavour=flavour, num_latents=num_latents, width=width)
                self.post_kl = torch.nn.Linear(embed_dim, width)
                self.flashvdm = False

            def enable_flashvdm_decoder(self, enabled=True, adaptive_kv_selection=True, topk_mode="mean",
                                        mc_algo="mc"):
                self.flashvdm = enabled
    return ShapeVAE


def _shape_modules(name, library, flavour="pypi"):
    """The shape package and its pipelines and models.autoencoders submodules. from_pretrained builds the
    VAE from the checkpoint folder's config.yaml (when it has one) through the pipelines module's
    instantiate_from_config and loads its weights strictly (PyPI) or not (main), as the flavours do."""
    module = types.ModuleType(name)
    pipelines = types.ModuleType(name + ".pipelines")
    autoencoders = types.ModuleType(name + ".models.autoencoders")
    autoencoders.ShapeVAE = shape_vae_class(library, flavour)

    def instantiate_from_config(config, **kwargs):
        target = config["target"]
        cls = autoencoders.ShapeVAE if target.endswith("ShapeVAE") else None
        kwargs.update(config.get("params", {}))
        return cls(**kwargs)

    pipelines.instantiate_from_config = instantiate_from_config

    class Hunyuan3DDiTFlowMatchingPipeline:
        @classmethod
        def from_pretrained(cls, model_path, device="cuda", dtype=torch.float16, use_safetensors=False,
                            variant="fp16", subfolder="", **kwargs):
            library.record("from_pretrained", model_path=model_path, subfolder=subfolder, device=device, dtype=dtype,
                           use_safetensors=use_safetensors, variant=variant)
            folder = os.path.join(model_path, subfolder)
            pipeline = cls()
            config_path = os.path.join(folder, "config.yaml")
            if os.path.getsize(config_path):
                import yaml

                with open(config_path) as handle:
                    config = yaml.safe_load(handle)
                vae = pipelines.instantiate_from_config(config["vae"])      # looked up at call time
                with open(os.path.join(folder, "model.fp16.safetensors"), "rb") as handle:
                    checkpoint = torch.load(handle, weights_only=True)
                state = {key[len("vae."):]: value for key, value in checkpoint.items() if key.startswith("vae.")}
                vae.load_state_dict(state, strict=(flavour == "pypi"))
                pipeline.vae = vae
            return pipeline

        def __init__(self):
            self.vae = None
            self.device = torch.device("cpu")

        def enable_flashvdm(self, enabled=True, adaptive_kv_selection=True, topk_mode="mean", mc_algo="mc",
                            replace_vae=True):
            library.record("enable_flashvdm", enabled=enabled, mc_algo=mc_algo, replace_vae=replace_vae, vae=self.vae)
            if self.vae is not None:
                self.vae.enable_flashvdm_decoder(enabled=enabled, mc_algo=mc_algo)

        def __call__(self, image=None, num_inference_steps=50, timesteps=None, sigmas=None, eta=0.0,
                     guidance_scale=5.0, generator=None, box_v=1.01, octree_resolution=384, mc_level=0.0,
                     mc_algo=None, num_chunks=8000, output_type="trimesh", enable_pbar=True, mask=None, **kwargs):
            library.record("pipeline", image=image, num_inference_steps=num_inference_steps,
                           guidance_scale=guidance_scale, generator=generator, octree_resolution=octree_resolution,
                           num_chunks=num_chunks, enable_pbar=enable_pbar, cwd=os.getcwd(),
                           tempdir=__import__("tempfile").gettempdir(), vae=self.vae)
            if library.shape_error is not None:
                error, library.shape_error = library.shape_error, None
                raise error
            callback, every = kwargs.get("callback"), kwargs.get("callback_steps")
            for step in range(num_inference_steps):
                if callback is not None and step % every == 0:
                    callback(step, torch.tensor(step), None)
            with open("library-scratch.txt", "w") as handle:   # the libraries leave files in the CWD
                handle.write("scratch")
            return [raw_mesh(library.open_mesh)]

    class FloaterRemover:
        def __call__(self, mesh):
            library.record("floater_remover", faces=len(mesh.faces))
            return mesh

    class DegenerateFaceRemover:
        def __call__(self, mesh):
            library.record("degenerate_remover", faces=len(mesh.faces))
            return mesh

    class FaceReducer:
        def __call__(self, mesh, max_facenum=40000):
            library.record("face_reducer", max_facenum=max_facenum, faces=len(mesh.faces))
            vertices, faces = decimate(mesh.vertices, mesh.faces, max_facenum)
            return trimesh.Trimesh(vertices, faces, process=False)

    for owner in (module, pipelines):
        owner.Hunyuan3DDiTFlowMatchingPipeline = Hunyuan3DDiTFlowMatchingPipeline
    module.FloaterRemover = FloaterRemover
    module.DegenerateFaceRemover = DegenerateFaceRemover
    module.FaceReducer = FaceReducer
    models = types.ModuleType(name + ".models")
    models.autoencoders = autoencoders
    return {name: module, name + ".pipelines": pipelines, name + ".models": models,
            name + ".models.autoencoders": autoencoders}


def write_vae_folder(folder, flavour_of_checkpoint="main", embed_dim=4, width=8, seed=0, prefix=""):
    """A ShapeVAE config.yaml and checkpoint (main's config carries the encoder settings, its checkpoint
    the encoder weights). Returns the decoder weight written, to tell which VAE got loaded."""
    import yaml

    os.makedirs(folder, exist_ok=True)
    params = {"num_latents": 16, "embed_dim": embed_dim, "width": width, "heads": 2, "num_decoder_layers": 1}
    if flavour_of_checkpoint == "main":
        params.update(num_encoder_layers=2, pc_size=64, pc_sharpedge_size=64)
    generator = torch.Generator().manual_seed(seed)
    state = {"post_kl.weight": torch.randn(width, embed_dim, generator=generator), "post_kl.bias": torch.zeros(width)}
    if flavour_of_checkpoint == "main":
        state.update({"encoder.weight": torch.randn(width, 3, generator=generator), "encoder.bias": torch.zeros(width)})
    config = {"target": "hy3dgen.shapegen.models.ShapeVAE", "params": params}
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump({"vae": config} if prefix else config, handle)
    with open(os.path.join(folder, "model.fp16.safetensors"), "wb") as handle:
        torch.save({prefix + key: value for key, value in state.items()}, handle)
    return state["post_kl.weight"]


def fake_safetensors():
    """safetensors.torch.load_file over torch.save files (CI has no safetensors)."""
    package = types.ModuleType("safetensors")
    module = types.ModuleType("safetensors.torch")

    def load_file(path, device="cpu"):
        with open(path, "rb") as handle:       # a file object: torch.load would hand a *.safetensors path back here
            return torch.load(handle, map_location=device, weights_only=True)

    module.load_file = load_file
    package.torch = module
    return {"safetensors": package, "safetensors.torch": module}


def _remover_module(name, library, alpha_value=77):
    module = types.ModuleType(name)

    class BackgroundRemover:
        def __init__(self):
            library.record("remover_init")

        def __call__(self, image):
            library.record("remover", mode=image.mode, size=image.size)
            rgba = np.dstack([np.asarray(image), np.full(image.size[::-1], alpha_value, np.uint8)])
            return Image.fromarray(rgba, "RGBA")

    module.BackgroundRemover = BackgroundRemover
    return module


def _own_atlas(vertices, faces):
    """The painters' own UV layout (xatlas, as they use): split vertices, same triangles, new order of
    corners within the atlas data."""
    import xatlas

    mapping, indices, uvs = xatlas.parametrize(np.asarray(vertices, np.float32), np.asarray(faces, np.uint32))
    return np.asarray(vertices)[mapping], np.asarray(indices, np.int64), np.asarray(uvs, np.float64)


def gradient_image(size=256):
    """red = u, green = v (OBJ convention: v up, so green grows towards the top row)."""
    u = (np.arange(size) + 0.5) / size
    red = np.tile(u, (size, 1))
    green = np.tile(u[::-1, None], (1, size))
    rgb = np.dstack([red, green, np.full((size, size), 0.5)])
    return Image.fromarray((rgb * 255 + 0.5).astype(np.uint8), "RGB")


def _texgen_module(name, library, flavour="pypi"):
    """hy3dgen.texgen: paints an RGB albedo (a UV gradient) and returns the mesh with its own atlas. GitHub
    main's from_pretrained takes a subfolder and defaults to the turbo paint model; PyPI's takes none."""
    module = types.ModuleType(name)

    class _Render:
        def __init__(self):
            self.texture_size = (2048, 2048)

        def set_default_texture_resolution(self, size):
            self.texture_size = (size, size) if isinstance(size, int) else size

    class Hunyuan3DPaintPipeline:
        if flavour == "main":
            @classmethod
            def from_pretrained(cls, model_path, subfolder="hunyuan3d-paint-v2-0-turbo"):
                library.record("paint_from_pretrained", model_path=model_path, subfolder=subfolder)
                if not os.path.isdir(os.path.join(model_path, subfolder)):
                    raise RuntimeError("Something wrong while loading %s" % model_path)
                return cls()
        else:
            @classmethod
            def from_pretrained(cls, model_path):
                library.record("paint_from_pretrained", model_path=model_path, subfolder="hunyuan3d-paint-v2-0")
                return cls()

        def __init__(self):
            self.config = types.SimpleNamespace(texture_size=2048, render_size=2048, device="cuda")
            self.render = _Render()

        def __call__(self, mesh, image):
            library.record("paint", faces=len(mesh.faces), image_mode=image.mode, cwd=os.getcwd(),
                           texture_size=self.render.texture_size, pixels=np.asarray(image))
            vertices, faces, uvs = _own_atlas(mesh.vertices, mesh.faces)
            painted = trimesh.Trimesh(vertices, faces, process=False)
            material = trimesh.visual.texture.SimpleMaterial(image=gradient_image())
            painted.visual = trimesh.visual.TextureVisuals(uv=uvs, image=gradient_image(), material=material)
            return painted

    module.Hunyuan3DPaintPipeline = Hunyuan3DPaintPipeline
    return module


ALBEDO_21 = (10, 200, 30)
# The paint model's MR image: R the training renders' constant (1.0), G roughness, B metallic.
MR_21 = (255, 40, 220)
ROUGHNESS_21, METALLIC_21 = MR_21[1], MR_21[2]


def _paint21_module(library):
    """hy3dpaint's textureGenPipeline: writes textured_mesh.obj/.mtl and its maps next to the output."""
    module = types.ModuleType("textureGenPipeline")

    class Hunyuan3DPaintConfig:
        def __init__(self, max_num_view, resolution):
            self.max_selected_view_num, self.resolution = max_num_view, resolution
            self.multiview_cfg_path = "cfgs/hunyuan-paint-pbr.yaml"
            self.custom_pipeline = "hunyuanpaintpbr"
            self.realesrgan_ckpt_path = "ckpt/RealESRGAN_x4plus.pth"
            self.dino_ckpt_path = "facebook/dinov2-giant"
            self.multiview_pretrained_path = "tencent/Hunyuan3D-2.1"
            self.texture_size, self.render_size, self.device = 4096, 2048, "cuda"

    class _Render:
        """The renderer's state after a call, as hy3dpaint's MeshRender keeps it: the mesh with its atlas
        (get_mesh returns the saved frame and OBJ-convention UVs) and float textures tex / tex_mr."""

        def set_default_texture_resolution(self, size):
            self.texture_size = size

        def get_mesh(self, normalize=True):
            return self.vtx_pos, self.pos_idx, self.vtx_uv, self.uv_idx

        def get_texture_mr(self):       # upstream's reading: metallic from channel 0
            mr = self.tex_mr.numpy()
            return np.repeat(mr[:, :, 0:1], 3, axis=2), np.repeat(mr[:, :, 1:2], 3, axis=2)

    class Hunyuan3DPaintPipeline:
        def __init__(self, config):
            library.record("paint21_init", config=vars(config).copy())
            self.config = config
            self.render = _Render()

        def __call__(self, mesh_path=None, image_path=None, output_mesh_path=None, use_remesh=True, save_glb=True):
            library.record("paint21", mesh_path=mesh_path, image_mode=image_path.mode, use_remesh=use_remesh,
                           save_glb=save_glb, cwd=os.getcwd(), texture_size=self.render.texture_size)
            mesh = trimesh.load(mesh_path, process=False)
            vertices, faces, uvs = _own_atlas(mesh.vertices, mesh.faces)
            base = os.path.splitext(output_mesh_path)[0]
            name = os.path.basename(base)
            with open(output_mesh_path, "w") as handle:
                handle.write("mtllib %s.mtl\no %s\n" % (name, name))
                handle.writelines("v %.6f %.6f %.6f\n" % tuple(v) for v in vertices)
                handle.writelines("vt %.6f %.6f\n" % tuple(t) for t in uvs)
                handle.writelines("f %d/%d %d/%d %d/%d\n" % (a + 1, a + 1, b + 1, b + 1, c + 1, c + 1)
                                  for a, b, c in faces)
            render = self.render
            render.vtx_pos, render.pos_idx, render.vtx_uv, render.uv_idx = vertices, faces, uvs, faces
            render.tex = torch.tensor(np.array(ALBEDO_21, np.float32) / 255).expand(64, 64, 3).clone()
            render.tex_mr = torch.tensor(np.array(MR_21, np.float32) / 255).expand(64, 64, 3).clone()
            metallic, roughness = render.get_texture_mr()       # what save_mesh writes, as JPEGs
            with open(base + ".mtl", "w") as handle:
                handle.write("newmtl Material\nmap_Kd %s.jpg\nmap_Pm %s_metallic.jpg\nmap_Pr %s_roughness.jpg\n"
                             % (name, name, name))
            Image.new("RGB", (64, 64), ALBEDO_21).save(base + ".jpg")
            Image.fromarray((metallic[..., 0] * 255 + 0.5).astype(np.uint8), "L").save(base + "_metallic.jpg")
            Image.fromarray((roughness[..., 0] * 255 + 0.5).astype(np.uint8), "L").save(base + "_roughness.jpg")
            return output_mesh_path

    module.Hunyuan3DPaintConfig = Hunyuan3DPaintConfig
    module.Hunyuan3DPaintPipeline = Hunyuan3DPaintPipeline
    return module


def install_library(monkeypatch, package, flavour="pypi"):
    """Put a fake `hy3dgen` (shapegen, texgen, rembg; `flavour` "pypi" for the 2.0.2 wheel or "main" for
    GitHub main) or `hy3dshape` (+ rembg, hy3dpaint's textureGenPipeline and the repo's torchvision_fix)
    into sys.modules, and report every Python package as installed and every import chain as importing.
    Returns the FakeLibrary recording the calls."""
    library = FakeLibrary()
    try:
        # accelerate imports safetensors: imported under the fake below it fails half-way, and the half-made
        # modules it leaves in sys.modules break every later import of it (lean_construction among them)
        import accelerate  # noqa: F401
    except ImportError:
        pass
    modules = dict(fake_safetensors())
    if package == "hy3dgen":
        modules["hy3dgen"] = types.ModuleType("hy3dgen")
        modules.update(_shape_modules("hy3dgen.shapegen", library, flavour))
        modules["hy3dgen.texgen"] = _texgen_module("hy3dgen.texgen", library, flavour)
        modules["hy3dgen.rembg"] = _remover_module("hy3dgen.rembg", library)
    else:
        modules.update(_shape_modules("hy3dshape", library, "main"))
        modules["hy3dshape.rembg"] = _remover_module("hy3dshape.rembg", library)
        modules["textureGenPipeline"] = _paint21_module(library)
        fix = types.ModuleType("torchvision_fix")
        fix.apply_fix = lambda: library.record("torchvision_fix") or True
        modules["torchvision_fix"] = fix
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(hc, "missing_modules", lambda names, paths=None: [])
    monkeypatch.setattr(hc, "probe_imports", lambda chain, paths=(), placeholders=(): {"ok": True})
    return library


def make_weights(root, *models):
    """Empty files where a model's files go: enough for the lookup, which checks presence only."""
    for model in models:
        folder = os.path.join(root, model.repo_id, model.subfolder)
        for entry in model.files:
            path = os.path.join(folder, entry.split("|")[0])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "w").close()
    return root


def make_repo21(root):
    """A folder laid out like a Hunyuan3D-2.1 checkout, as far as the engine checks it."""
    for part in ("hy3dshape/hy3dshape/pipelines.py", "hy3dpaint/textureGenPipeline.py",
                 "hy3dpaint/DifferentiableRenderer/mesh_inpaint_processor.cpython-312-x86_64-linux-gnu.so",
                 "hy3dpaint/ckpt/RealESRGAN_x4plus.pth", "hy3dpaint/cfgs/hunyuan-paint-pbr.yaml"):
        path = os.path.join(root, part)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").close()
    return root
