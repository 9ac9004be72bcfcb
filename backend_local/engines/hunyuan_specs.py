"""What each Hunyuan3D engine needs, in one place and in plain data (no torch, no library imports): the
weight files to download, the pip packages, the library module chains that must import, and the model
variant and step default behind each quality preset.

The engines build their weight lookups and availability checks from this; the installer
(`python -m backend_local install ENGINE`) reads WEIGHTS and PACKAGES to know what to fetch.

Step defaults follow upstream: the shape pipelines' `num_inference_steps` defaults to 50 for the
non-distilled DiTs (hunyuan3d-dit-v2-1, -v2-0, -v2-mini); only the step-distilled `-turbo` subfolders
are meant for 5 steps (upstream's apps: 5 for turbo, 30 otherwise). Guidance 5.0 and octree 256 are the
upstream apps' values for every model, and the contract's defaults, so no engine overrides them.
"""

from dataclasses import dataclass, field

FAST, BALANCED, HIGH = "fast", "balanced", "high"
PRESETS = (FAST, BALANCED, HIGH)

REPO_20 = "tencent/Hunyuan3D-2"
REPO_MINI = "tencent/Hunyuan3D-2mini"
REPO_MV = "tencent/Hunyuan3D-2mv"
REPO_21 = "tencent/Hunyuan3D-2.1"
DINO_GIANT = "facebook/dinov2-giant"


@dataclass(frozen=True)
class Weights:
    """Files of one Hugging Face repository an engine needs: `allow_patterns` for snapshot_download."""

    repo_id: str
    subfolders: tuple
    allow_patterns: tuple
    revision: str = None          # None: the repository's main branch (the installer may pin it)
    purpose: str = ""


@dataclass(frozen=True)
class ShapeVariant:
    """The shape model a preset runs: its subfolder, its own step count when the request leaves
    num_inference_steps null, and FlashVDM (with the turbo VAE from `vae_subfolder` when there is one)."""

    subfolder: str
    steps: int
    flashvdm: bool = False
    vae_subfolder: str = None
    distilled: bool = False       # step-distilled (turbo): few steps are what it was trained for
    vae_repo_id: str = None       # the turbo VAE's repository when it is not the DiT's (2mv uses 2.0's)

    @property
    def weights(self):
        """What the loaded model is made of: presets that differ only in steps share one loaded model."""
        return (self.subfolder, self.flashvdm, self.vae_subfolder, self.vae_repo_id)


@dataclass(frozen=True)
class EngineSpec:
    name: str
    repo_id: str                  # where the shape model lives
    shape: dict                   # preset -> ShapeVariant
    weights: tuple                # Weights entries, everything any preset or stage uses
    packages: dict                # stage -> pip requirement names (installed into the current environment)
    import_chains: dict           # stage -> modules that must import, in order ("module:function" is called)
    notes: dict = field(default_factory=dict)


def _weights(repo_id, checkpoints, folders, purpose):
    """`checkpoints`: {subfolder: checkpoint file} fetched as config.yaml + that file only (the folders
    hold other large files the engines never read); `folders`: subfolders fetched whole (diffusers)."""
    patterns = [pattern for folder, checkpoint in checkpoints.items()
                for pattern in ("%s/config.yaml" % folder, "%s/%s" % (folder, checkpoint))]
    patterns += ["%s/*" % folder for folder in folders]
    return Weights(repo_id, tuple(checkpoints) + tuple(folders), tuple(patterns), purpose=purpose)


# pip names of what the library modules import (module -> package), for the messages and the installer.
PIP_NAMES = {
    "cv2": "opencv-python", "yaml": "PyYAML", "skimage": "scikit-image", "PIL": "Pillow",
    "pytorch_lightning": "pytorch-lightning", "sklearn": "scikit-learn",
}

SHAPE_PACKAGES_20 = ("hy3dgen", "diffusers", "transformers", "einops", "pymeshlab", "trimesh", "opencv-python",
                     "PyYAML", "safetensors", "scikit-image")
PAINT_PACKAGES_20 = ("hy3dgen", "diffusers", "transformers", "accelerate", "xatlas", "opencv-python", "trimesh",
                     "pybind11")
SHAPE_PACKAGES_21 = ("diffusers", "transformers", "timm", "einops", "omegaconf", "pymeshlab", "trimesh",
                     "opencv-python", "PyYAML", "scikit-image")
PAINT_PACKAGES_21 = ("diffusers", "transformers", "accelerate", "omegaconf", "xatlas", "pymeshlab", "trimesh",
                     "opencv-python", "realesrgan", "basicsr", "pytorch-lightning", "einops",
                     "pybind11", "pygltflib")

HUNYUAN_20 = EngineSpec(
    name="hunyuan3d-2",
    repo_id=REPO_20,
    shape={
        FAST: ShapeVariant("hunyuan3d-dit-v2-0-turbo", 5, flashvdm=True, vae_subfolder="hunyuan3d-vae-v2-0-turbo",
                           distilled=True),
        BALANCED: ShapeVariant("hunyuan3d-dit-v2-0", 50),
        HIGH: ShapeVariant("hunyuan3d-dit-v2-0", 75),
    },
    weights=(
        _weights(REPO_20, dict.fromkeys(("hunyuan3d-dit-v2-0", "hunyuan3d-dit-v2-0-turbo", "hunyuan3d-vae-v2-0-turbo"),
                                        "model.fp16.safetensors"),
                 ("hunyuan3d-paint-v2-0", "hunyuan3d-delight-v2-0"),
                 "Hunyuan3D-2 shape (standard and turbo), the turbo VAE for FlashVDM, paint and delight"),
    ),
    packages={"shape": SHAPE_PACKAGES_20, "texture": PAINT_PACKAGES_20},
    import_chains={"shape": ("hy3dgen.shapegen",), "texture": ("hy3dgen.texgen", "custom_rasterizer")},
)

HUNYUAN_MINI = EngineSpec(
    name="hunyuan3d-2mini",
    repo_id=REPO_MINI,
    shape={
        FAST: ShapeVariant("hunyuan3d-dit-v2-mini-turbo", 5, flashvdm=True,
                           vae_subfolder="hunyuan3d-vae-v2-mini-turbo", distilled=True),
        BALANCED: ShapeVariant("hunyuan3d-dit-v2-mini", 50),
        HIGH: ShapeVariant("hunyuan3d-dit-v2-mini", 75),
    },
    weights=(
        _weights(REPO_MINI, dict.fromkeys(("hunyuan3d-dit-v2-mini", "hunyuan3d-dit-v2-mini-turbo",
                                           "hunyuan3d-vae-v2-mini-turbo"), "model.fp16.safetensors"), (),
                 "Hunyuan3D-2mini shape (standard and turbo) and the turbo VAE for FlashVDM"),
    ),
    packages={"shape": SHAPE_PACKAGES_20},
    import_chains={"shape": ("hy3dgen.shapegen",)},
)

HUNYUAN_21 = EngineSpec(
    name="hunyuan3d-2.1",
    repo_id=REPO_21,
    # 2.1 has no step-distilled (turbo) model and no turbo VAE: Fast runs the one DiT at upstream's app
    # default of 30 steps; its app offers no FlashVDM, so neither do we.
    shape={
        FAST: ShapeVariant("hunyuan3d-dit-v2-1", 30),
        BALANCED: ShapeVariant("hunyuan3d-dit-v2-1", 50),
        HIGH: ShapeVariant("hunyuan3d-dit-v2-1", 75),
    },
    weights=(
        _weights(REPO_21, {"hunyuan3d-dit-v2-1": "model.fp16.ckpt"}, ("hunyuan3d-paintpbr-v2-1",),
                 "Hunyuan3D-2.1 shape and PBR paint"),
        Weights(DINO_GIANT, (), ("config.json", "model.safetensors", "preprocessor_config.json"),
                purpose="DINOv2-giant (the painter's image encoder)"),
    ),
    packages={"shape": SHAPE_PACKAGES_21, "texture": PAINT_PACKAGES_21},
    # hy3dpaint imports hunyuanpaintpbr lazily (utils/multiview_utils at load time), and its package
    # __init__ -> unet/model needs pytorch_lightning: the chain names it so a missing one shows here.
    import_chains={"shape": ("hy3dshape",),
                   "texture": ("torchvision_fix:apply_fix", "textureGenPipeline", "hunyuanpaintpbr",
                               "custom_rasterizer")},
    notes={FAST: "Hunyuan3D-2.1 has no turbo model: Fast runs the standard DiT with 30 steps"},
)

# Multi-view (hy3dgen's MVImageProcessorV2 + DinoImageEncoderMV, 1-4 views). Its repository has no VAE
# of its own: the mv checkpoints carry 2.0's, and upstream's enable_flashvdm() maps Hunyuan3D-2mv to
# tencent/Hunyuan3D-2's turbo VAE, which Fast therefore declares and loads from that repository.
# hunyuan3d-dit-v2-mv-fast (guidance-distilled: one DiT pass per step instead of two, same step count)
# is not a preset's model, as 2.0's -v2-0-fast is not: Fast runs the step-distilled turbo (5 steps),
# which is faster still, and the folder (a third copy of the 1.1 B DiT) is not downloaded.
MV_TURBO_VAE = "hunyuan3d-vae-v2-0-turbo"
HUNYUAN_MV = EngineSpec(
    name="hunyuan3d-2mv",
    repo_id=REPO_MV,
    shape={
        FAST: ShapeVariant("hunyuan3d-dit-v2-mv-turbo", 5, flashvdm=True, vae_subfolder=MV_TURBO_VAE,
                           distilled=True, vae_repo_id=REPO_20),
        BALANCED: ShapeVariant("hunyuan3d-dit-v2-mv", 50),
        HIGH: ShapeVariant("hunyuan3d-dit-v2-mv", 75),
    },
    weights=(
        _weights(REPO_MV, dict.fromkeys(("hunyuan3d-dit-v2-mv", "hunyuan3d-dit-v2-mv-turbo"),
                                        "model.fp16.safetensors"), (),
                 "Hunyuan3D-2mv multi-view shape (standard and turbo)"),
        # texture: the 2.0 painter (as upstream's textured multi-view example); Fast: 2.0's turbo VAE
        _weights(REPO_20, {MV_TURBO_VAE: "model.fp16.safetensors"},
                 ("hunyuan3d-paint-v2-0", "hunyuan3d-delight-v2-0"),
                 "the turbo VAE FlashVDM decodes 2mv-turbo with, and the Hunyuan3D-2 paint and delight models"),
    ),
    packages={"shape": SHAPE_PACKAGES_20, "texture": PAINT_PACKAGES_20},
    import_chains={"shape": ("hy3dgen.shapegen",), "texture": ("hy3dgen.texgen", "custom_rasterizer")},
    notes={"texture": "the Hunyuan3D-2 painter paints from the front image only (it takes one image); "
                      "texture_engine builtin projects every view"},
)

SPECS = {spec.name: spec for spec in (HUNYUAN_21, HUNYUAN_20, HUNYUAN_MINI, HUNYUAN_MV)}

# For the installer: engine name -> weights / pip packages (all stages).
WEIGHTS = {name: spec.weights for name, spec in SPECS.items()}
PACKAGES = {name: tuple(dict.fromkeys(p for stage in spec.packages.values() for p in stage))
            for name, spec in SPECS.items()}


# Files from outside the Hugging Face hub, for the installer: engine -> (url, path inside the source
# checkout). The 2.1 painter's upscaler is the Real-ESRGAN release upstream's README fetches.
DOWNLOADS = {
    "hunyuan3d-2.1": (("https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
                       "hy3dpaint/ckpt/RealESRGAN_x4plus.pth"),),
}


def shape_variant(engine, preset=None):
    """The shape model variant a preset (None: balanced) runs on `engine`."""
    return SPECS[engine].shape[preset or BALANCED]


def install_command(engine):
    return "python -m backend_local install %s" % engine
