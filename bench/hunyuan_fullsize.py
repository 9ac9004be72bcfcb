"""Hunyuan3D at its real size with random weights: our engines against the upstream pipelines, with
per-process GPU memory caps.

    . bench/device/setup_env.sh; python bench/hunyuan_fullsize.py build --weights W [--models 2.1 2 2mini]
    python bench/hunyuan_fullsize.py ours --weights W --cap-gb 24 --jobs 2 --out R.json
    python bench/hunyuan_fullsize.py upstream --weights W --cap-gb 0 --out R.json
    python bench/hunyuan_fullsize.py ours --engine hunyuan3d-2 [--preset fast] --weights W --out R.json
    python bench/hunyuan_fullsize.py upstream --engine hunyuan3d-2 [--preset fast] --weights W --out R.json

build: the 2.1 shape model from hy3dshape/configs/hunyuandit-finetuning-flowmatching-dinog518-bf16-lr1e5-4096.yaml
(HunYuanDiTPlain 2048 wide, 21 layers, 6 MoE layers of 8 experts; ShapeVAE 4096 latents, width 1024, 8+16
layers; DINOv2-L at 518) in the release layout (config.yaml + model.fp16.ckpt), its VAE head set to decode
a closed blob (hunyuan_tiny.blob_head) so marching cubes has a surface; the PBR paint model on Stable
Diffusion 2.1's UNet (320/640/1280/1280, 1024-wide cross-attention, linear projections) wrapped in hy3dpaint's
UNet2p5DConditionModel (12-channel input), SD's AutoencoderKL, an OpenCLIP-H-sized text encoder, DINOv2-giant
(1536 wide, 40 layers, SwiGLU) and the real RRDBNet (64 features, 23 blocks), all in the painter's formats.

2.0 and 2mini (hy3dgen's Hunyuan3DDiT, Flux-style): DiT 1024 wide, 16 double + 32 single blocks (2mini: 8 +
16), DINOv2-giant at 518, ShapeVAE width 1024 with 16 decoder layers; 2.0 with the released config's 3072
latents, 2mini with hy3dshape/configs/hunyuan3ddit-mini-*-512.yaml's 512. The Fast preset's folders (turbo
DiT: the same weights under its subfolder name; turbo VAE for FlashVDM) are written beside them.

ours: whole jobs through backend_local.Pipeline (2.1: shape + texture, 50 steps; 2.0 / 2mini: their shape
with the built-in texture, as the engine menu offers when the painter does not fit).
upstream: the same weights through the library's Hunyuan3DDiTFlowMatchingPipeline + postprocessors (and for
2.1 hy3dpaint's Hunyuan3DPaintPipeline) directly, with the same settings (fast: the turbo DiT, 5 steps,
enable_flashvdm as upstream's app does).
Each prints and appends one JSON record per job: per stage load s, s per denoising step, stage s, peak
GPU GB (torch's allocator), peak host RSS GB; and whether the job read weights from disk.
"""

import argparse
import json
import os
import sys
import threading
import time
import traceback

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

IMAGE = os.path.join(ROOT, "tests", "data", "mug", "input.png")
CONFIG_21 = "hy3dshape/configs/hunyuandit-finetuning-flowmatching-dinog518-bf16-lr1e5-4096.yaml"
SETTINGS = dict(num_inference_steps=50, octree_resolution=256, guidance_scale=5.0, face_count=40000,
                texture_size=1024, seed=1234)
GB = 1024 ** 3


def repo():
    return os.environ["GEN3D_HUNYUAN21_REPO"]


def lib_paths():
    return [os.path.join(repo(), "hy3dshape"), os.path.join(repo(), "hy3dpaint"), repo()]


# ---------------------------------------------------------------------------------------------------
# Weights


def shape_config_21():
    import yaml

    with open(os.path.join(repo(), "hy3dshape", CONFIG_21.split("/", 1)[1])) as handle:
        train = yaml.safe_load(handle)["model"]["params"]
    vae = dict(train["first_stage_config"]["params"])
    vae.pop("pc_size", None), vae.pop("pc_sharpedge_size", None)
    vae.update({"pc_size": 81920, "pc_sharpedge_size": 0})
    dino = train["cond_stage_config"]["params"]["main_image_encoder"]
    return {
        "model": {"target": "hy3dshape.models.denoisers.hunyuandit.HunYuanDiTPlain", "params": train["denoiser_cfg"]["params"]},
        "vae": {"target": "hy3dshape.models.autoencoders.ShapeVAE", "params": vae},
        "conditioner": {"target": "hy3dshape.models.conditioner.SingleImageEncoder",
                        "params": {"main_image_encoder": dino}},
        "scheduler": {"target": "hy3dshape.schedulers.FlowMatchEulerDiscreteScheduler",
                      "params": {"num_train_timesteps": 1000}},
        "image_processor": {"target": "hy3dshape.preprocessors.ImageProcessorV2",
                            "params": {"size": 512, "border_ratio": 0.15}},
        "pipeline": {"target": "hy3dshape.pipelines.Hunyuan3DDiTFlowMatchingPipeline"},
    }


DINO_GIANT = {"attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.0, "hidden_size": 1536, "image_size": 518, "initializer_range": 0.02,
              "layer_norm_eps": 1.0e-6, "layerscale_value": 1.0, "mlp_ratio": 4, "model_type": "dinov2",
              "num_attention_heads": 24, "num_channels": 3, "num_hidden_layers": 40, "patch_size": 14,
              "qkv_bias": True, "use_swiglu_ffn": True}
# name -> (engine, hub repo id, Balanced subfolder, Fast subfolder, turbo VAE subfolder, DiT depth, single, latents)
HY3DGEN_MODELS = {
    "2": ("hunyuan3d-2", "tencent/Hunyuan3D-2", "hunyuan3d-dit-v2-0", "hunyuan3d-dit-v2-0-turbo",
          "hunyuan3d-vae-v2-0-turbo", 16, 32, 3072),
    "2mini": ("hunyuan3d-2mini", "tencent/Hunyuan3D-2mini", "hunyuan3d-dit-v2-mini", "hunyuan3d-dit-v2-mini-turbo",
              "hunyuan3d-vae-v2-mini-turbo", 8, 16, 512),
}
ENGINE_MODEL = {spec[0]: key for key, spec in HY3DGEN_MODELS.items()}


def shape_config_20(depth, single_blocks, latents):
    """hy3dgen's release layout: the Flux-style DiT, ShapeVAE, DINOv2-giant conditioner, flow matching."""
    return {
        "model": {"target": "hy3dgen.shapegen.models.Hunyuan3DDiT",
                  "params": {"in_channels": 64, "context_in_dim": 1536, "hidden_size": 1024, "mlp_ratio": 4.0,
                             "num_heads": 16, "depth": depth, "depth_single_blocks": single_blocks, "axes_dim": [64],
                             "theta": 10000, "qkv_bias": True, "guidance_embed": False}},
        "vae": {"target": "hy3dgen.shapegen.models.ShapeVAE",
                "params": {"num_latents": latents, "embed_dim": 64, "num_freqs": 8, "include_pi": False, "heads": 16,
                           "width": 1024, "num_decoder_layers": 16, "qkv_bias": False, "qk_norm": True,
                           "scale_factor": 0.9990943042622529}},
        "conditioner": {"target": "hy3dgen.shapegen.models.SingleImageEncoder",
                        "params": {"main_image_encoder": {"type": "DinoImageEncoder",
                                                          "kwargs": {"config": dict(DINO_GIANT), "image_size": 518,
                                                                     "use_cls_token": True}}}},
        "scheduler": {"target": "hy3dgen.shapegen.schedulers.FlowMatchEulerDiscreteScheduler",
                      "params": {"num_train_timesteps": 1000}},
        "image_processor": {"target": "hy3dgen.shapegen.preprocessors.ImageProcessorV2",
                            "params": {"size": 512, "border_ratio": 0.15}},
    }


def build_shape_20(root, key):
    """One hy3dgen model at full size: the Balanced folder (config.yaml + model.fp16.safetensors, keys
    prefixed model./vae./conditioner.), the turbo DiT folder linked to the same files (same architecture;
    random weights cost the same per step) and the turbo VAE folder FlashVDM decodes with."""
    import safetensors.torch
    import yaml
    import hunyuan_tiny
    from hy3dgen.shapegen.pipelines import instantiate_from_config

    _engine, repo_id, subfolder, turbo, turbo_vae, depth, single, latents = HY3DGEN_MODELS[key]
    torch.manual_seed(0)
    config = shape_config_20(depth, single, latents)
    with torch.device("cuda"):
        parts = {name: instantiate_from_config(config[name]) for name in ("model", "vae", "conditioner")}
    hunyuan_tiny.blob_head(parts["vae"])
    folder = os.path.join(root, repo_id, subfolder)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    sizes = {name: params_b(part) for name, part in parts.items()}
    flat = {"%s.%s" % (name, k): v.half().cpu().contiguous() for name, part in parts.items()
            for k, v in part.state_dict().items()}
    safetensors.torch.save_file(flat, os.path.join(folder, "model.fp16.safetensors"))
    vae_folder = os.path.join(root, repo_id, turbo_vae)
    os.makedirs(vae_folder, exist_ok=True)
    with open(os.path.join(vae_folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config["vae"], handle, sort_keys=False)
    safetensors.torch.save_file({k: v.half().cpu().contiguous() for k, v in parts["vae"].state_dict().items()},
                                os.path.join(vae_folder, "model.fp16.safetensors"))
    turbo_folder = os.path.join(root, repo_id, turbo)
    if not os.path.exists(turbo_folder):
        os.symlink(folder, turbo_folder)
    del parts, flat
    return {"params_b": sizes, "file_gb": round(os.path.getsize(os.path.join(folder, "model.fp16.safetensors")) / GB, 2)}


def params_b(module):
    return round(sum(p.numel() for p in module.parameters()) / 1e9, 3)


def build_shape(root):
    import yaml
    import hunyuan_tiny
    from hy3dshape.pipelines import instantiate_from_config

    torch.manual_seed(0)
    config = shape_config_21()
    with torch.device("cuda"):
        parts = {name: instantiate_from_config(config[name]) for name in ("model", "vae", "conditioner")}
    hunyuan_tiny.blob_head(parts["vae"])
    folder = os.path.join(root, "tencent", "Hunyuan3D-2.1", "hunyuan3d-dit-v2-1")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    sizes = {name: params_b(part) for name, part in parts.items()}
    states = {name: {k: v.half().cpu().contiguous() for k, v in part.state_dict().items()} for name, part in parts.items()}
    del parts
    torch.save(states, os.path.join(folder, "model.fp16.ckpt"))
    return {"params_b": sizes, "ckpt_gb": round(os.path.getsize(os.path.join(folder, "model.fp16.ckpt")) / GB, 2)}


def build_paint(root):
    """The 2.1 paint model at SD 2.1 size, DINOv2-giant and RealESRGAN, as hunyuan_tiny lays them out."""
    import hunyuan_tiny
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import BitImageProcessor, CLIPTextConfig, CLIPTextModel, Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    sizes = {}
    sd21 = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                block_out_channels=(320, 640, 1280, 1280),
                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True)
    sys.path.insert(0, os.path.join(repo(), "hy3dpaint"))
    from hunyuanpaintpbr.unet import modules

    with torch.device("cuda"):
        base = UNet2DConditionModel(**sd21)
        unet = modules.UNet2p5DConditionModel(UNet2DConditionModel(**sd21))
        conv = unet.unet.conv_in
        unet.unet.conv_in = torch.nn.Conv2d(12, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                                            padding=conv.padding)
    sizes["unet2p5d"] = params_b(unet)
    folder = os.path.join(root, "tencent", "Hunyuan3D-2.1", "hunyuan3d-paintpbr-v2-1")
    unet_dir = os.path.dirname(modules.__file__)
    original_text, original_vae = hunyuan_tiny._text_encoder, hunyuan_tiny._vae

    def text_encoder(vocab_size, width=1024):       # OpenCLIP ViT-H text tower size
        model = CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=1024, intermediate_size=4096,
                                             num_hidden_layers=23, num_attention_heads=16, max_position_embeddings=77,
                                             projection_dim=1024, hidden_act="gelu", bos_token_id=vocab_size - 2,
                                             eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))
        sizes["text_encoder"] = params_b(model)
        return model

    def vae():                                       # Stable Diffusion's AutoencoderKL
        model = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                              layers_per_block=2, sample_size=768, scaling_factor=0.18215)
        sizes["vae"] = params_b(model)
        return model

    hunyuan_tiny._text_encoder, hunyuan_tiny._vae = text_encoder, vae
    try:
        hunyuan_tiny._multiview_folder(folder, unet, base, [os.path.join(unet_dir, "modules.py"),
                                                            os.path.join(unet_dir, "attn_processor.py")])
    finally:
        hunyuan_tiny._text_encoder, hunyuan_tiny._vae = original_text, original_vae
    del unet, base
    dino_dir = os.path.join(root, "facebook", "dinov2-giant")
    with torch.device("cuda"):
        dino = Dinov2Model(Dinov2Config(hidden_size=1536, num_hidden_layers=40, num_attention_heads=24, mlp_ratio=4,
                                        image_size=518, patch_size=14, use_swiglu_ffn=True, layerscale_value=1.0))
    sizes["dinov2_giant"] = params_b(dino)
    dino.half().save_pretrained(dino_dir)
    BitImageProcessor(do_resize=True, size={"shortest_edge": 256}, do_center_crop=True,
                      crop_size={"height": 224, "width": 224}, do_normalize=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(dino_dir)
    hunyuan_tiny.build_realesrgan(os.path.join(root, "RealESRGAN_x4plus.pth"), repo())
    sizes["realesrgan"] = 0.0167
    return {"params_b": sizes}


# ---------------------------------------------------------------------------------------------------
# Measuring


class HostPeak:
    """Peak resident set size of this process, sampled every 20 ms."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def rss():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.rss())

    def reset(self):
        self.peak = self.rss()

    def gb(self):
        return round(max(self.peak, self.rss()) / GB, 2)


class StepTimer:
    """Times a denoiser's forward calls (each diffusion step calls it once, CFG batched)."""

    def __init__(self):
        self.starts, self.ends = [], []
        self.handles = []

    def attach(self, module):
        def pre(_m, _a):
            torch.cuda.synchronize()
            self.starts.append(time.perf_counter())

        def post(_m, _a, _o):
            torch.cuda.synchronize()
            self.ends.append(time.perf_counter())

        self.handles = [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def take(self):
        count = len(self.ends)
        per = (self.ends[-1] - self.starts[0]) / count if count else None
        self.starts, self.ends = [], []
        return {"steps": count, "s_per_step": round(per, 4) if per else None}


class Stages:
    """Per-stage wall time, peak GPU (allocated and reserved) and peak host RSS."""

    def __init__(self, host):
        self.host, self.rows, self.current, self.t0 = host, {}, None, None

    def start(self, name):
        self.stop()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        self.host.reset()
        self.current, self.t0 = name, time.perf_counter()

    def stop(self):
        if self.current is None:
            return
        torch.cuda.synchronize()
        row = self.rows.setdefault(self.current, {})
        row.update({"stage_s": round(time.perf_counter() - self.t0, 2),
                    "peak_gpu_gb": round(torch.cuda.max_memory_allocated() / GB, 2),
                    "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / GB, 2),
                    "peak_host_gb": self.host.gb()})
        self.current = None


def set_cap(cap_gb):
    if cap_gb:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(cap_gb * GB / total, 0)


def image():
    from backend_local import foreground, imageio

    pixels, has_alpha = imageio.open_image(IMAGE)
    return foreground.frame(foreground.foreground_rgba(pixels, has_alpha, True, 1234))[0]


# ---------------------------------------------------------------------------------------------------
# Ours


def failure(exc):
    """A failed job's record fields: the error in one line and the traceback's tail."""
    return {"ok": False, "error": "%s: %s" % (type(exc).__name__, str(exc)[:600]),
            "trace": traceback.format_exc()[-1500:]}


def job_settings(args):
    """The request's fields: SETTINGS, with the Fast preset's tuned step count (null) instead of 50."""
    settings = dict(SETTINGS)
    if args.preset:
        settings["preset"] = args.preset
        if args.preset == "fast":
            settings.pop("num_inference_steps")
    return settings


def run_ours(args):
    from backend_local.engines.base import SHAPE
    from backend_local.pipeline import Pipeline
    from shared.request import parse_request

    set_cap(args.cap_gb)
    host = HostPeak()
    name = args.engine
    texture_engine = name if name == "hunyuan3d-2.1" else "builtin"
    settings = {"weights_dir": args.weights, "repo": repo()}
    settings.update(json.loads(args.engine_settings or "{}"))
    pipeline = Pipeline("cuda", settings={name: settings})
    engine = pipeline.registry.get(name, SHAPE)
    loads = []
    original = engine.load_stage

    def timed_load(stage, device, *rest):
        t0 = time.perf_counter()
        model = original(stage, device, *rest)
        torch.cuda.synchronize()
        loads.append((stage, round(time.perf_counter() - t0, 2)))
        return model

    engine.load_stage = timed_load
    timers = {}
    original_model = engine.model

    def model(stage, device, *rest):
        value = original_model(stage, device, *rest)
        if stage not in timers:
            timers[stage] = StepTimer()
            denoiser = value.pipeline.model if stage == SHAPE else value.models["multiview_model"].pipeline.unet
            timers[stage].attach(denoiser)
        return value

    engine.model = model
    for job in range(args.jobs):
        stages = Stages(host)
        loads.clear()

        def progress(event, stages=stages):
            stage = event.get("stage")
            if stage in ("shape", "texture", "export") and stage != stages.current:
                stages.start(stage)

        request = parse_request(dict(image_path=IMAGE, engine=name, texture_engine=texture_engine,
                                     **job_settings(args)))
        record = {"kind": "ours", "engine": name, "preset": args.preset, "cap_gb": args.cap_gb, "job": job + 1,
                  "settings": {k: v for k, v in settings.items() if k not in ("weights_dir", "repo")}}
        t0 = time.perf_counter()
        try:
            manifest = pipeline.run(request, os.path.join(args.scratch, "ours-%d" % job), on_progress=progress)
            stages.stop()
            record.update(ok=True, timings={k: round(v, 2) for k, v in manifest["timings"].items()},
                          faces=manifest["mesh"].get("faces"))
        except Exception as exc:
            stages.stop()
            record.update(failure(exc))
        record["job_s"] = round(time.perf_counter() - t0, 2)
        record["loads_from_disk"] = list(loads)
        record["stages"] = stages.rows
        record["steps"] = {stage: timer.take() for stage, timer in timers.items()}
        record["plans"] = [(key, plan.describe()) for key, plan in pipeline.memory.last_plans]
        emit(args, record)
        if not record["ok"]:
            break


# ---------------------------------------------------------------------------------------------------
# Upstream


def upstream_shape(library, pipe, pil, steps, stages):
    """The library's shape pipeline and its three postprocessors (`library` holds FloaterRemover,
    DegenerateFaceRemover and FaceReducer), timed as the "shape" stage with seconds per step."""
    stages.start("shape")
    timer = StepTimer()
    timer.attach(pipe.model)
    mesh = pipe(image=pil, num_inference_steps=steps, guidance_scale=SETTINGS["guidance_scale"],
                octree_resolution=SETTINGS["octree_resolution"],
                generator=torch.Generator("cpu").manual_seed(1234), enable_pbar=False)[0]
    mesh = library.FaceReducer()(library.DegenerateFaceRemover()(library.FloaterRemover()(mesh)),
                                 max_facenum=SETTINGS["face_count"])
    stages.stop()
    stages.rows["shape"].update(timer.take())
    return mesh


def run_upstream_20(args):
    """hy3dgen's shape pipeline and postprocessors directly (the shape stage only: our side pairs it with the
    built-in texture, which has no upstream counterpart)."""
    set_cap(args.cap_gb)
    _engine, repo_id, subfolder, turbo, turbo_vae, *_ = HY3DGEN_MODELS[ENGINE_MODEL[args.engine]]
    fast = args.preset == "fast"
    host = HostPeak()
    stages = Stages(host)
    record = {"kind": "upstream", "engine": args.engine, "preset": args.preset, "cap_gb": args.cap_gb, "job": 1}
    t_job = time.perf_counter()
    try:
        from PIL import Image

        pil = Image.fromarray(image(), "RGBA")
        stages.start("shape_load")
        from hy3dgen.shapegen import Hunyuan3DDiTFlowMatchingPipeline

        root = os.path.join(args.weights, repo_id)
        pipe = Hunyuan3DDiTFlowMatchingPipeline.from_pretrained(root, subfolder=turbo if fast else subfolder,
                                                                use_safetensors=True)
        if fast:
            from hy3dgen.shapegen.models.autoencoders import ShapeVAE

            pipe.vae = ShapeVAE.from_pretrained(root, subfolder=turbo_vae, use_safetensors=True,
                                                device="cuda", dtype=torch.float16)
            pipe.enable_flashvdm(mc_algo="mc", replace_vae=False)
        import hy3dgen.shapegen as library

        mesh = upstream_shape(library, pipe, pil, 5 if fast else SETTINGS["num_inference_steps"], stages)
        record.update(ok=True, faces=int(len(mesh.faces)))
    except Exception as exc:
        stages.stop()
        record.update(failure(exc))
    record["job_s"] = round(time.perf_counter() - t_job, 2)
    record["stages"] = stages.rows
    emit(args, record)


def run_upstream(args):
    if args.engine != "hunyuan3d-2.1":
        return run_upstream_20(args)
    set_cap(args.cap_gb)
    sys.path[:0] = lib_paths()
    host = HostPeak()
    stages = Stages(host)
    record = {"kind": "upstream", "cap_gb": args.cap_gb, "job": 1}
    t_job = time.perf_counter()
    try:
        import trimesh
        from PIL import Image

        from backend_local.engines import hunyuan_common as hc

        rgba = image()
        pil = Image.fromarray(rgba, "RGBA")
        stages.start("shape_load")
        from hy3dshape.pipelines import Hunyuan3DDiTFlowMatchingPipeline

        shape_root = os.path.join(args.weights, "tencent", "Hunyuan3D-2.1")
        pipe = Hunyuan3DDiTFlowMatchingPipeline.from_pretrained(shape_root, subfolder="hunyuan3d-dit-v2-1")
        import hy3dshape.postprocessors as library

        mesh = upstream_shape(library, pipe, pil, SETTINGS["num_inference_steps"], stages)
        record["faces"] = int(len(mesh.faces))
        work = os.path.join(args.scratch, "upstream")
        os.makedirs(work, exist_ok=True)
        mesh_path = os.path.join(work, "shape.obj")
        mesh.export(mesh_path)
        stages.start("texture_load")
        with hc.library_paths(lib_paths()), hc.trusted_local_pipelines(), \
                hc.offline({"tencent/Hunyuan3D-2.1": shape_root}), \
                hc.placeholder_modules(["bpy"], "not needed with save_glb=False"):
            hc.import_library("torchvision_fix", "fix").apply_fix()
            from textureGenPipeline import Hunyuan3DPaintConfig, Hunyuan3DPaintPipeline

            config = Hunyuan3DPaintConfig(6, 512)
            config.multiview_cfg_path = os.path.join(repo(), "hy3dpaint", "cfgs", "hunyuan-paint-pbr.yaml")
            config.custom_pipeline = os.path.join(repo(), "hy3dpaint", "hunyuanpaintpbr")
            config.realesrgan_ckpt_path = os.path.join(args.weights, "RealESRGAN_x4plus.pth")
            config.dino_ckpt_path = os.path.join(args.weights, "facebook", "dinov2-giant")
            config.texture_size = 2 * SETTINGS["texture_size"]
            painter = Hunyuan3DPaintPipeline(config)
            stages.start("texture")
            timer = StepTimer()
            timer.attach(painter.models["multiview_model"].pipeline.unet)
            painter(mesh_path=mesh_path, image_path=pil, output_mesh_path=os.path.join(work, "textured.obj"),
                    use_remesh=False, save_glb=False)
            stages.stop()
            stages.rows["texture"].update(timer.take())
        record["ok"] = True
    except Exception as exc:
        stages.stop()
        record.update(failure(exc))
    record["job_s"] = round(time.perf_counter() - t_job, 2)
    record["stages"] = stages.rows
    emit(args, record)


def emit(args, record):
    line = json.dumps(record, default=str)
    print("RESULT " + line, flush=True)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(line + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["build", "ours", "upstream"])
    parser.add_argument("--weights", required=True)
    parser.add_argument("--cap-gb", type=float, default=0)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out")
    parser.add_argument("--scratch", default="/tmp/fullsize-jobs")
    parser.add_argument("--engine-settings", help="JSON merged into the engine settings")
    parser.add_argument("--engine", default="hunyuan3d-2.1", choices=["hunyuan3d-2.1"] + sorted(ENGINE_MODEL))
    parser.add_argument("--preset", choices=["fast", "balanced", "high"])
    parser.add_argument("--models", nargs="+", default=["2.1"], choices=["2.1"] + sorted(HY3DGEN_MODELS),
                        help="build: which models to write")
    args = parser.parse_args(argv)
    os.makedirs(args.scratch, exist_ok=True)
    if args.what == "build":
        sys.path[:0] = lib_paths()
        t0 = time.perf_counter()
        report = {"kind": "build"}
        parts = [("shape", build_shape), ("paint", build_paint)] if "2.1" in args.models else []
        parts += [("shape-" + key, lambda root, key=key: build_shape_20(root, key))
                  for key in args.models if key in HY3DGEN_MODELS]
        for name, build in parts:       # one model failing to build leaves the others to run
            torch.cuda.empty_cache()
            try:
                report[name] = build(args.weights)
            except Exception as exc:
                report[name] = {"error": "%s: %s" % (type(exc).__name__, exc), "trace": traceback.format_exc()[-1200:]}
        report["seconds"] = round(time.perf_counter() - t0, 1)
        emit(args, report)
    elif args.what == "ours":
        run_ours(args)
    else:
        run_upstream(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
