"""Tiny random-weight Hunyuan3D checkpoints in the libraries' own formats, so the real library code (and
our engines) can run end to end where the multi-GB weights cannot be downloaded.

    GEN3D_HUNYUAN21_REPO=/path/to/Hunyuan3D-2.1 python bench/hunyuan_tiny.py WEIGHTS_DIR [--only 2.1 2 2mini 2mv] [--turbo]

writes, as from_pretrained(model_path, subfolder=...) expects (point GEN3D_WEIGHTS_DIR at WEIGHTS_DIR):
  tencent/Hunyuan3D-2.1/hunyuan3d-dit-v2-1/   config.yaml + model.fp16.ckpt         (torch.save of
                                              {"model", "vae", "conditioner"} state dicts, as 2.1 ships)
  tencent/Hunyuan3D-2/hunyuan3d-dit-v2-0/     config.yaml + model.fp16.safetensors  (one file, keys prefixed
  tencent/Hunyuan3D-2mini/hunyuan3d-dit-v2-mini/                                     model./vae./conditioner.)
  tencent/Hunyuan3D-2mv/hunyuan3d-dit-v2-mv/          (the same, with the multi-view DinoImageEncoderMV and
                                                       MVImageProcessorV2)
  with --turbo also the Fast preset's -turbo DiT folders and turbo VAEs (TURBO; 2mv's is tencent/Hunyuan3D-2's)

The configs name the same classes with the same options as the released ones (DiT, ShapeVAE, DINOv2
conditioner, flow-matching scheduler, image processor); only the sizes are toy. The weights are random,
except the VAE's occupancy head: a random decoder's field has no usable zero level, so its query
projection, final norm and output layer are set to decode a closed blob (the field sum(cos x_i) - 2.6,
about a ball of radius 0.9), with the randomly initialised cross-attention to the latents left in at a
small scale so seed, image, guidance and step count still change the surface.

The painters' models (`--paint 2 2.1`, or build_paint()) are diffusers folders as the painters load them:
  tencent/Hunyuan3D-2/hunyuan3d-delight-v2-0/     StableDiffusionInstructPix2PixPipeline (save_pretrained):
                                                  UNet2DConditionModel (8 input channels), AutoencoderKL,
                                                  CLIPTextModel, a CLIPTokenizer made here, EulerAncestral
  tencent/Hunyuan3D-2/hunyuan3d-paint-v2-0/       model_index.json for the painter's custom pipeline;
  tencent/Hunyuan3D-2.1/hunyuan3d-paintpbr-v2-1/  vae/ text_encoder/ tokenizer/ scheduler/ feature_extractor/
                                                  and unet/ with config.json (the base UNet2DConditionModel),
                                                  diffusion_pytorch_model.bin (the library's UNet2p5DConditionModel
                                                  state dict) and the library's unet module file(s), which
                                                  model_index.json names as ["modules", "UNet2p5DConditionModel"]
                                                  (diffusers' custom-component loading: copied from the installed
                                                  library at build time, never kept in this repository)
  facebook/dinov2-giant/                          Dinov2Model + image processor (hidden size 1536, as the 2.1
                                                  UNet's DINO projection expects; one layer)
  RealESRGAN_x4plus.pth                           {"params_ema": RRDBNet state dict}; the 2.1 painter fixes the
                                                  architecture (64 features, 23 blocks), so only the values are toy
The sizes the libraries hard-code are kept (cross-attention width 1024 for the learned text tokens, a 1280-wide
time embedding for 2.0's camera embedding, 12 input channels, 512-pixel views); everything else is toy.
"""

import argparse
import contextlib
import json
import os
import shutil
import sys

import torch
import yaml

DINO_TINY = {
    "attention_probs_dropout_prob": 0.0, "drop_path_rate": 0.0, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
    "hidden_size": 32, "image_size": 28, "initializer_range": 0.02, "layer_norm_eps": 1.0e-6,
    "layerscale_value": 1.0, "mlp_ratio": 4, "model_type": "dinov2", "num_attention_heads": 4,
    "num_channels": 3, "num_hidden_layers": 1, "patch_size": 14, "qkv_bias": True, "use_swiglu_ffn": False,
}
DINO_TOKENS = (28 // 14) ** 2 + 1          # patches + the class token the DiT cross-attends to
LATENTS, LATENT_CHANNELS, VAE_WIDTH, NUM_FREQS = 64, 8, 32, 8
BLOB_LEVEL = 2.6                           # sum(cos x_i) > 2.6 inside: a ball-like solid of radius ~0.9
PERTURBATION = 0.05                        # scale of the random latent-dependent part of the decoder


def _vae_params(extra=None):
    params = {"num_latents": LATENTS, "embed_dim": LATENT_CHANNELS, "num_freqs": NUM_FREQS, "include_pi": False,
              "heads": 4, "width": VAE_WIDTH, "num_decoder_layers": 1, "qkv_bias": False, "qk_norm": True,
              "scale_factor": 0.9990943042622529, "geo_decoder_mlp_expand_ratio": 4,
              "geo_decoder_downsample_ratio": 1, "geo_decoder_ln_post": True}
    params.update(extra or {})
    return params


def _conditioner(package, encoder="DinoImageEncoder", **extra):
    return {"target": "%s.SingleImageEncoder" % package,
            "params": {"main_image_encoder": {"type": encoder,
                                              "kwargs": dict({"config": dict(DINO_TINY), "image_size": 28,
                                                              "use_cls_token": True}, **extra)}}}


def config_21():
    """hunyuan3d-dit-v2-1: HunYuanDiTPlain with MoE layers, ShapeVAE, DINOv2, flow-matching scheduler."""
    return {
        "model": {"target": "hy3dshape.models.denoisers.hunyuandit.HunYuanDiTPlain",
                  "params": {"input_size": LATENTS, "in_channels": LATENT_CHANNELS, "hidden_size": 64,
                             "context_dim": DINO_TINY["hidden_size"], "depth": 2, "num_heads": 4, "qk_norm": True,
                             "text_len": DINO_TOKENS, "with_decoupled_ca": False, "use_attention_pooling": False,
                             "qk_norm_type": "rms", "qkv_bias": False, "use_pos_emb": False, "num_moe_layers": 1,
                             "num_experts": 2, "moe_top_k": 1}},
        "vae": {"target": "hy3dshape.models.autoencoders.ShapeVAE",
                "params": _vae_params({"num_encoder_layers": 1, "point_feats": 4, "pc_size": 64,
                                       "pc_sharpedge_size": 0})},
        "conditioner": _conditioner("hy3dshape.models.conditioner"),
        "scheduler": {"target": "hy3dshape.schedulers.FlowMatchEulerDiscreteScheduler",
                      "params": {"num_train_timesteps": 1000}},
        "image_processor": {"target": "hy3dshape.preprocessors.ImageProcessorV2",
                            "params": {"size": 64, "border_ratio": 0.15}},
        "pipeline": {"target": "hy3dshape.pipelines.Hunyuan3DDiTFlowMatchingPipeline"},
    }


def config_20(depth=1, single_blocks=1):
    """hunyuan3d-dit-v2-0 / v2-mini: the Flux-style Hunyuan3DDiT, ShapeVAE, DINOv2, flow matching."""
    return {
        "model": {"target": "hy3dgen.shapegen.models.Hunyuan3DDiT",
                  "params": {"in_channels": LATENT_CHANNELS, "context_in_dim": DINO_TINY["hidden_size"],
                             "hidden_size": 64, "mlp_ratio": 4.0, "num_heads": 4, "depth": depth,
                             "depth_single_blocks": single_blocks, "axes_dim": [16], "theta": 10000,
                             "qkv_bias": True, "guidance_embed": False}},
        "vae": {"target": "hy3dgen.shapegen.models.ShapeVAE", "params": _vae_params()},
        "conditioner": _conditioner("hy3dgen.shapegen.models"),
        "scheduler": {"target": "hy3dgen.shapegen.schedulers.FlowMatchEulerDiscreteScheduler",
                      "params": {"num_train_timesteps": 1000}},
        "image_processor": {"target": "hy3dgen.shapegen.preprocessors.ImageProcessorV2",
                            "params": {"size": 64, "border_ratio": 0.15}},
    }


def config_mv():
    """hunyuan3d-dit-v2-mv: 2.0's DiT and VAE, conditioned by DinoImageEncoderMV (each view's DINOv2 tokens
    plus a sin-cos embedding of its view index, the views' tokens concatenated: 4 x DINO_TOKENS of context)
    on images from MVImageProcessorV2 (a dict front/left/back/right -> views sorted by index)."""
    config = config_20()
    config["conditioner"] = _conditioner("hy3dgen.shapegen.models", "DinoImageEncoderMV", view_num=4)
    config["image_processor"] = {"target": "hy3dgen.shapegen.preprocessors.MVImageProcessorV2",
                                 "params": {"size": 64, "border_ratio": 0.15}}
    return config


MODELS = {
    "2.1": ("hy3dshape.pipelines", "tencent/Hunyuan3D-2.1", "hunyuan3d-dit-v2-1", config_21, "ckpt"),
    "2": ("hy3dgen.shapegen.pipelines", "tencent/Hunyuan3D-2", "hunyuan3d-dit-v2-0", config_20, "safetensors"),
    "2mini": ("hy3dgen.shapegen.pipelines", "tencent/Hunyuan3D-2mini", "hunyuan3d-dit-v2-mini",
              lambda: config_20(depth=1, single_blocks=2), "safetensors"),
    "2mv": ("hy3dgen.shapegen.pipelines", "tencent/Hunyuan3D-2mv", "hunyuan3d-dit-v2-mv", config_mv, "safetensors"),
}
# Fast preset (hy3dgen models): the turbo DiT folder (same toy config, other random weights) and the turbo
# VAE FlashVDM decodes with (a ShapeVAE folder: config.yaml {target, params} + unprefixed state dict). 2mv
# has no VAE of its own: upstream's enable_flashvdm maps it to tencent/Hunyuan3D-2's.
TURBO = {
    "2": ("hunyuan3d-dit-v2-0-turbo", "tencent/Hunyuan3D-2", "hunyuan3d-vae-v2-0-turbo"),
    "2mini": ("hunyuan3d-dit-v2-mini-turbo", "tencent/Hunyuan3D-2mini", "hunyuan3d-vae-v2-mini-turbo"),
    "2mv": ("hunyuan3d-dit-v2-mv-turbo", "tencent/Hunyuan3D-2", "hunyuan3d-vae-v2-0-turbo"),
}


@torch.no_grad()
def blob_head(vae):
    """Make the VAE decode sum(cos x_i) - BLOB_LEVEL (sign-preserving through its LayerNorm): channel 0
    carries the field, channel 1 its negative and channels 2, 3 a constant pair, so the channel mean is
    zero and the norm only rescales it. The random cross-attention stays in, scaled down."""
    decoder = vae.geo_decoder
    proj = decoder.query_proj
    proj.weight.zero_()
    proj.bias.zero_()
    cos_columns = [3 + 3 * NUM_FREQS + axis * NUM_FREQS for axis in range(3)]   # layout: x, sin(fx), cos(fx)
    proj.weight[0, cos_columns] = 1.0
    proj.bias[0] = -BLOB_LEVEL
    proj.weight[1, cos_columns] = -1.0
    proj.bias[1] = BLOB_LEVEL
    proj.bias[2], proj.bias[3] = 1.0, -1.0
    block = decoder.cross_attn_decoder
    for layer in (block.attn.c_proj, block.mlp.c_proj):
        layer.weight.mul_(PERTURBATION)
        layer.bias.mul_(PERTURBATION)
    decoder.ln_post.weight.fill_(1.0)
    decoder.ln_post.bias.zero_()
    decoder.output_proj.weight.zero_()
    decoder.output_proj.weight[0, 0] = 1.0
    decoder.output_proj.bias.zero_()


def build(root, which, seed=0, turbo=False):
    """Write the tiny checkpoints under `root` (with `turbo`, also each hy3dgen model's TURBO folders);
    returns {model: folder}."""
    import importlib

    written = {}
    for key in which:
        module, repo_id, subfolder, make_config, kind = MODELS[key]
        written[key] = _build_one(importlib.import_module(module).instantiate_from_config, make_config(),
                                  os.path.join(root, repo_id, subfolder), kind, seed)
        if turbo and key in TURBO:
            dit, vae_repo, vae_subfolder = TURBO[key]
            written[key + "-turbo"] = _build_one(importlib.import_module(module).instantiate_from_config,
                                                 make_config(), os.path.join(root, repo_id, dit), kind, seed + 1)
            written[key + "-turbo-vae"] = build_vae(importlib.import_module(module).instantiate_from_config,
                                                    make_config()["vae"], os.path.join(root, vae_repo, vae_subfolder),
                                                    seed + 2)
    return written


def build_vae(instantiate, vae_config, folder, seed):
    """A ShapeVAE folder as ShapeVAE.from_pretrained (and our turbo VAE loader) reads it."""
    import safetensors.torch

    torch.manual_seed(seed)
    vae = instantiate(vae_config)
    blob_head(vae)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(vae_config, handle, sort_keys=False)
    safetensors.torch.save_file({k: v.half().contiguous() for k, v in vae.state_dict().items()},
                                os.path.join(folder, "model.fp16.safetensors"))
    return folder


def _build_one(instantiate, config, folder, kind, seed):
    """One model folder: config.yaml and the model/vae/conditioner weights in the library's format."""
    torch.manual_seed(seed)
    parts = {name: instantiate(config[name]) for name in ("model", "vae", "conditioner")}
    blob_head(parts["vae"])
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    states = {name: {k: v.half().contiguous() for k, v in part.state_dict().items()}
              for name, part in parts.items()}
    if kind == "ckpt":
        torch.save(states, os.path.join(folder, "model.fp16.ckpt"))
    else:
        import safetensors.torch

        flat = {"%s.%s" % (name, k): v for name, state in states.items() for k, v in state.items()}
        safetensors.torch.save_file(flat, os.path.join(folder, "model.fp16.safetensors"))
    return folder


# ---------------------------------------------------------------------------------------------------
# Painters

PAINT_REPOS = {"2": "tencent/Hunyuan3D-2", "2.1": "tencent/Hunyuan3D-2.1"}
TEXT_WIDTH = 1024           # the painters' learned text tokens are (77, 1024): the UNet's cross-attention width
DINO_WIDTH = 1536           # the 2.1 UNet projects DINOv2-giant features (1536 wide)
REALESRGAN_FILE = "RealESRGAN_x4plus.pth"


@contextlib.contextmanager
def _on_path(folder):
    """`folder` first on sys.path while importing from it (the 2.1 repo uses top-level names like `utils`)."""
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        sys.path.remove(folder)


def _bytes_to_unicode():
    """GPT-2/CLIP's byte-to-character table (byte-level BPE)."""
    codes = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    chars = codes[:]
    extra = 0
    for byte in range(256):
        if byte not in codes:
            codes.append(byte)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


def clip_tokenizer(folder):
    """A CLIP byte-level BPE tokenizer made here (no download): every byte, with and without the end-of-word
    mark, the two special tokens and no merges. Saved with save_pretrained; returns it."""
    from transformers import CLIPTokenizer

    os.makedirs(folder, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    scratch = folder + ".src"
    os.makedirs(scratch, exist_ok=True)
    with open(os.path.join(scratch, "vocab.json"), "w", encoding="utf-8") as handle:
        json.dump({token: index for index, token in enumerate(tokens)}, handle, ensure_ascii=False)
    with open(os.path.join(scratch, "merges.txt"), "w", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n")
    tokenizer = CLIPTokenizer(os.path.join(scratch, "vocab.json"), os.path.join(scratch, "merges.txt"),
                              model_max_length=77)
    tokenizer.save_pretrained(folder)
    shutil.rmtree(scratch)
    return tokenizer


def _text_encoder(vocab_size, width=32):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width,
                                        num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                        projection_dim=width, bos_token_id=vocab_size - 2,
                                        eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))


def _vae():
    """AutoencoderKL with Stable Diffusion's layout (4 latent channels, 8x downsampling), 8 channels wide."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         layers_per_block=1, norm_num_groups=4, sample_size=512, scaling_factor=0.18215)


def _unet(in_channels, cross_attention_dim, time_embedding_dim=None):
    """UNet2DConditionModel with Stable Diffusion 2's block types, two levels 32/64 wide, 32-wide heads."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(sample_size=64, in_channels=in_channels, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                attention_head_dim=(1, 2), cross_attention_dim=cross_attention_dim,
                                use_linear_projection=True, time_embedding_dim=time_embedding_dim)


def _scheduler():
    from diffusers import EulerAncestralDiscreteScheduler

    return EulerAncestralDiscreteScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                           beta_schedule="scaled_linear")


def build_delight(folder):
    """hunyuan3d-delight-v2-0: an InstructPix2Pix pipeline (image latents concatenated: 8 UNet inputs)."""
    from diffusers import StableDiffusionInstructPix2PixPipeline
    from transformers import CLIPImageProcessor

    tokenizer = clip_tokenizer(os.path.join(folder, "tokenizer"))
    encoder = _text_encoder(len(tokenizer))
    pipeline = StableDiffusionInstructPix2PixPipeline(
        vae=_vae(), text_encoder=encoder, tokenizer=tokenizer,
        unet=_unet(8, encoder.config.hidden_size), scheduler=_scheduler(), safety_checker=None,
        feature_extractor=CLIPImageProcessor(), requires_safety_checker=False)
    pipeline.save_pretrained(folder)
    return folder


def _multiview_folder(folder, unet_2p5d, base_unet, module_files, pipeline_class="HunyuanPaintPipeline"):
    """A painter's multiview diffusers folder: standard components by save_pretrained, the custom UNet as
    config.json + diffusion_pytorch_model.bin + its module file(s), and model_index.json naming them."""
    from transformers import CLIPImageProcessor

    tokenizer = clip_tokenizer(os.path.join(folder, "tokenizer"))
    _text_encoder(len(tokenizer)).save_pretrained(os.path.join(folder, "text_encoder"))
    _vae().save_pretrained(os.path.join(folder, "vae"))
    _scheduler().save_pretrained(os.path.join(folder, "scheduler"))
    CLIPImageProcessor().save_pretrained(os.path.join(folder, "feature_extractor"))
    unet_folder = os.path.join(folder, "unet")
    os.makedirs(unet_folder, exist_ok=True)
    config = {key: value for key, value in dict(base_unet.config).items() if not key.startswith("_")}
    with open(os.path.join(unet_folder, "config.json"), "w") as handle:
        json.dump(config, handle, indent=2)
    torch.save({k: v.half().contiguous() for k, v in unet_2p5d.state_dict().items()},
               os.path.join(unet_folder, "diffusion_pytorch_model.bin"))
    for path in module_files:
        shutil.copy(path, unet_folder)
    import diffusers

    index = {"_class_name": pipeline_class, "_diffusers_version": diffusers.__version__,
             "feature_extractor": ["transformers", "CLIPImageProcessor"], "safety_checker": [None, None],
             "scheduler": ["diffusers", "EulerAncestralDiscreteScheduler"],
             "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
             "unet": ["modules", "UNet2p5DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}
    with open(os.path.join(folder, "model_index.json"), "w") as handle:
        json.dump(index, handle, indent=2)
    return folder


def build_paint20(folder):
    """hunyuan3d-paint-v2-0: hy3dgen's UNet2p5DConditionModel around a UNet with 1024-wide cross-attention
    and a 1280-wide time embedding (its camera embedding's width)."""
    from hy3dgen.texgen.hunyuanpaint.unet import modules

    base = _unet(4, TEXT_WIDTH, time_embedding_dim=1280)
    unet = modules.UNet2p5DConditionModel(_unet(4, TEXT_WIDTH, time_embedding_dim=1280))
    return _multiview_folder(folder, unet, base, [modules.__file__])


def build_paint21(folder, repo):
    """hunyuan3d-paintpbr-v2-1: hy3dpaint's UNet2p5DConditionModel (albedo + metallic-roughness, DINO,
    12-channel conv_in as its from_pretrained makes it)."""
    with _on_path(os.path.join(repo, "hy3dpaint")):
        from hunyuanpaintpbr.unet import modules

    base = _unet(4, TEXT_WIDTH)
    unet = modules.UNet2p5DConditionModel(_unet(4, TEXT_WIDTH))
    conv = unet.unet.conv_in
    unet.unet.conv_in = torch.nn.Conv2d(12, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                                        padding=conv.padding)
    unet_dir = os.path.dirname(modules.__file__)
    return _multiview_folder(folder, unet, base, [os.path.join(unet_dir, "modules.py"),
                                                  os.path.join(unet_dir, "attn_processor.py")])


def build_dino(folder):
    """facebook/dinov2-giant's format (config.json, model.safetensors, preprocessor_config.json) at the
    giant's width 1536, one layer, 224-pixel crops."""
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=DINO_WIDTH, num_hidden_layers=1, num_attention_heads=12, mlp_ratio=1,
                          image_size=224, patch_size=14)
    Dinov2Model(config).half().save_pretrained(folder)
    BitImageProcessor(do_resize=True, size={"shortest_edge": 256}, do_center_crop=True,
                      crop_size={"height": 224, "width": 224}, do_normalize=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def build_realesrgan(path, repo):
    """RealESRGAN_x4plus.pth as RealESRGANer loads it: {"params_ema": RRDBNet(3, 3, 64, 23, 32, x4) state}.
    basicsr imports a torchvision module newer torchvision lacks: the 2.1 repo's torchvision_fix goes first."""
    with _on_path(repo):
        import torchvision_fix

        torchvision_fix.apply_fix()
        from basicsr.archs.rrdbnet_arch import RRDBNet

    model = RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)
    with torch.no_grad():
        for name, param in model.named_parameters():   # small residual updates: a near-identity-scale net
            if name.startswith("body."):
                param.mul_(0.1)
    torch.save({"params_ema": {k: v.half() for k, v in model.state_dict().items()}}, path)
    return path


def build_paint(root, which, seed=0, repo=None):
    """Write the painters' tiny models under `root` (2: delight + multiview; 2.1: PBR multiview, DINOv2,
    RealESRGAN). Returns {name: path}."""
    written = {}
    for key in which:
        torch.manual_seed(seed)
        base = os.path.join(root, PAINT_REPOS[key])
        if key == "2":
            written["delight-2"] = build_delight(os.path.join(base, "hunyuan3d-delight-v2-0"))
            written["paint-2"] = build_paint20(os.path.join(base, "hunyuan3d-paint-v2-0"))
        else:
            if not repo:
                raise ValueError("the 2.1 paint model needs the Hunyuan3D-2.1 checkout (its hy3dpaint code)")
            written["paint-2.1"] = build_paint21(os.path.join(base, "hunyuan3d-paintpbr-v2-1"), repo)
            written["dino"] = build_dino(os.path.join(root, "facebook", "dinov2-giant"))
            written["realesrgan"] = build_realesrgan(os.path.join(root, REALESRGAN_FILE), repo)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="weights folder to write (use it as GEN3D_WEIGHTS_DIR)")
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--turbo", action="store_true", help="also the Fast preset's turbo DiT and turbo VAE "
                        "folders of the hy3dgen models (%s)" % ", ".join(sorted(TURBO)))
    parser.add_argument("--paint", nargs="*", choices=sorted(PAINT_REPOS), default=[],
                        help="also the painters' models (2: delight + multiview; 2.1: PBR, DINOv2, RealESRGAN)")
    args = parser.parse_args(argv)
    repo = os.environ.get("GEN3D_HUNYUAN21_REPO")
    if "2.1" in args.only:
        if not repo:
            parser.error("building the 2.1 checkpoint needs GEN3D_HUNYUAN21_REPO (its hy3dshape code)")
        sys.path.insert(0, os.path.join(repo, "hy3dshape"))
    for key, folder in build(args.root, args.only, turbo=args.turbo).items():
        print("%-14s %s" % (key, folder))
    for key, folder in build_paint(args.root, args.paint, repo=repo).items():
        print("%-10s %s" % (key, folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
