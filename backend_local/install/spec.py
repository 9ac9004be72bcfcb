"""What installing each Hunyuan3D engine means: its Python packages, its upstream source at a pinned
commit, the native extensions built from that source, and the weight files it loads.

This is the one place these are declared; the engines and the RunPod image read it from here
(`ENGINES[name]`). Versions are the set the engines ran with on a GPU (HUNYUAN.md: torch 2.11+cu130,
diffusers 0.42.1, transformers 5.17, basicsr 1.4.2, realesrgan 0.3.0). torch itself is never in a list:
the installed torch is kept (see pip_step), and torchvision is resolved against it.
"""

from dataclasses import dataclass, field

from ..engines import hunyuan_specs

HUNYUAN21_COMMIT = "5e3ec6def57591d22ff44722cfe9bea1266084b0"
HUNYUAN2_COMMIT = "9bcf3028145311cbea5c127aed19717833b3a35f"


@dataclass(frozen=True)
class Source:
    """An upstream repository at a fixed commit, fetched as GitHub's archive tarball."""

    repo: str                 # owner/name on GitHub
    commit: str
    marker: str               # a file every checkout of it has (relative), to recognise a --source folder

    @property
    def name(self):
        return self.repo.split("/")[1]

    @property
    def url(self):
        return "https://github.com/%s/archive/%s.tar.gz" % (self.repo, self.commit)


@dataclass(frozen=True)
class Extension:
    """A native extension built from the source checkout against the installed torch.

    kind "setup": a setup.py project (torch.utils.cpp_extension), installed with
    `pip install --no-build-isolation` so it compiles against this torch, not a fresh one.
    kind "pybind": one C++ file compiled to <module><EXT_SUFFIX> in `dest` (a folder of the checkout, or
    "package:<module>" for an installed package's folder) for the library to import by its plain name.
    """

    name: str
    kind: str
    path: str                 # setup.py folder, or the .cpp file, relative to the checkout
    module: str               # the import name that proves it is built (as the library imports it)
    cuda: bool = False
    dest: str = ""            # pybind only


@dataclass(frozen=True)
class Weights:
    """Files of one Hugging Face repository, as allow_patterns for snapshot_download."""

    repo_id: str
    allow_patterns: tuple
    what: str
    revision: str = "main"    # resolved to a commit on first install and kept in the install record


@dataclass(frozen=True)
class UrlFile:
    """A weight file outside the hub (the painter's upscaler), checked by size and sha256."""

    url: str
    filename: str
    size: int
    sha256: str
    what: str


@dataclass(frozen=True)
class EngineSpec:
    name: str
    packages: tuple                   # pip requirement strings, installed with dependencies
    no_deps: tuple = ()               # installed without their own requirements (listed in `packages` instead)
    no_build_isolation: tuple = ()    # sdists whose setup.py imports torch
    source: Source = None
    extensions: tuple = ()
    weights: tuple = ()
    files: tuple = ()
    onnxruntime: bool = False         # the background remover: onnxruntime-gpu with a CUDA torch, else onnxruntime
    # What the engine imports when it runs, in order, for the image's build-time check
    # (backend_remote/check_engines.py): "module" or "module:function" (called, e.g. a compatibility fix).
    # library_paths are folders of the source checkout put first on sys.path, as the engine does;
    # placeholders are modules the library imports but Gen3D never uses (2.1 imports Blender's bpy).
    modules: tuple = ()
    source_env: str = ""              # the engine's variable for its checkout: install puts the source there when set
    library_paths: tuple = ()
    placeholders: tuple = field(default=())


COMMON = (
    "diffusers==0.42.1", "transformers==5.17.0", "accelerate==1.15.0", "huggingface_hub>=1.0", "safetensors==0.8.0",
    "einops==0.8.2", "omegaconf==2.3.0", "pyyaml>=6", "pymeshlab==2025.7.post1", "pygltflib>=1.16", "torchvision",
    "tqdm>=4.66",
)
BUILD_TOOLS = ("pybind11==3.1.0", "ninja==1.13.2", "setuptools>=64", "wheel")
PAINTER21 = ("pytorch-lightning==2.6.6", "realesrgan==0.3.0", "basicsr==1.4.2", "timm==1.0.31", "rembg==2.0.86")
# hy3dgen's own requirements add gradio, fastapi, uvicorn and the CPU onnxruntime; it imports none of them.
HY3DGEN = ("hy3dgen==2.0.2", "rembg==2.0.86")

REALESRGAN = UrlFile("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
                     "RealESRGAN_x4plus.pth", 67040989,
                     "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
                     "the 2.1 painter's RealESRGAN x4 upscaler")

RASTERIZER21 = Extension("custom_rasterizer", "setup", "hy3dpaint/custom_rasterizer", "custom_rasterizer_kernel",
                         cuda=True)
RASTERIZER2 = Extension("custom_rasterizer", "setup", "hy3dgen/texgen/custom_rasterizer", "custom_rasterizer_kernel",
                        cuda=True)

def hub_weights(engine):
    """The engine's hub files as its module declares them (hunyuan_specs.WEIGHTS: every preset's models,
    the turbo ones included), so what is installed is what the engine looks for."""
    return tuple(Weights(w.repo_id, w.allow_patterns, w.purpose) for w in hunyuan_specs.WEIGHTS[engine])


# hunyuan3d-2 and hunyuan3d-2mv run the same hy3dgen painter from the same checkout's extensions.
SOURCE2 = Source("Tencent-Hunyuan/Hunyuan3D-2", HUNYUAN2_COMMIT, "hy3dgen/texgen/differentiable_renderer/mesh_processor.cpp")
EXTENSIONS2 = (
    RASTERIZER2,
    # hy3dgen imports `.mesh_processor`: a compiled module beside its pure-Python mesh_processor.py wins.
    Extension("mesh_processor", "pybind", "hy3dgen/texgen/differentiable_renderer/mesh_processor.cpp",
              "hy3dgen.texgen.differentiable_renderer.mesh_processor",
              dest="package:hy3dgen.texgen.differentiable_renderer"),
)
MODULES2 = ("hy3dgen.shapegen", "hy3dgen.rembg", "hy3dgen.texgen", "hy3dgen.texgen.differentiable_renderer.mesh_processor",
            "custom_rasterizer", "custom_rasterizer_kernel")


def _hy3dgen_painter_engine(name):
    """The entry of an engine on that painter: packages, source, extensions and imports are one list for
    both, only the weights are the engine's own."""
    return EngineSpec(
        name=name,
        packages=COMMON + BUILD_TOOLS + HY3DGEN,
        no_deps=("hy3dgen==2.0.2",),
        source=SOURCE2,
        extensions=EXTENSIONS2,
        weights=hub_weights(name),
        onnxruntime=True,
        modules=MODULES2,
    )


ENGINES = {
    "hunyuan3d-2.1": EngineSpec(
        name="hunyuan3d-2.1",
        packages=COMMON + BUILD_TOOLS + PAINTER21,
        no_build_isolation=("basicsr==1.4.2",),
        source=Source("Tencent-Hunyuan/Hunyuan3D-2.1", HUNYUAN21_COMMIT, "hy3dpaint/textureGenPipeline.py"),
        source_env="GEN3D_HUNYUAN21_REPO",
        extensions=(
            RASTERIZER21,
            Extension("mesh_inpaint_processor", "pybind", "hy3dpaint/DifferentiableRenderer/mesh_inpaint_processor.cpp",
                      "DifferentiableRenderer.mesh_inpaint_processor", dest="hy3dpaint/DifferentiableRenderer"),
        ),
        weights=hub_weights("hunyuan3d-2.1"),
        files=(REALESRGAN,),
        onnxruntime=True,
        library_paths=("hy3dshape", "hy3dpaint", "."),
        placeholders=("bpy",),
        modules=("torchvision_fix:apply_fix", "hy3dshape", "hy3dshape.pipelines", "hy3dshape.rembg",
                 "textureGenPipeline", "DifferentiableRenderer.mesh_inpaint_processor", "custom_rasterizer",
                 "custom_rasterizer_kernel", "realesrgan", "basicsr.archs.rrdbnet_arch", "pytorch_lightning"),
    ),
    "hunyuan3d-2": _hy3dgen_painter_engine("hunyuan3d-2"),
    "hunyuan3d-2mini": EngineSpec(
        name="hunyuan3d-2mini",
        packages=COMMON + HY3DGEN,
        no_deps=("hy3dgen==2.0.2",),
        weights=hub_weights("hunyuan3d-2mini"),
        onnxruntime=True,
        modules=("hy3dgen.shapegen", "hy3dgen.rembg"),
    ),
    # The multi-view pipeline (MVImageProcessorV2, DinoImageEncoderMV) is in the pinned hy3dgen 2.0.2 wheel.
    "hunyuan3d-2mv": _hy3dgen_painter_engine("hunyuan3d-2mv"),
}


def spec(name):
    return ENGINES[name]
