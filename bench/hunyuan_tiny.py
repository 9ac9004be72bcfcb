"""Tiny random-weight Hunyuan3D checkpoints in the libraries' own formats, so the real library code (and
our engines) can run end to end where the multi-GB weights cannot be downloaded.

    GEN3D_HUNYUAN21_REPO=/path/to/Hunyuan3D-2.1 python bench/hunyuan_tiny.py WEIGHTS_DIR [--only 2.1 2 2mini]

writes, as from_pretrained(model_path, subfolder=...) expects (point GEN3D_WEIGHTS_DIR at WEIGHTS_DIR):
  tencent/Hunyuan3D-2.1/hunyuan3d-dit-v2-1/   config.yaml + model.fp16.ckpt         (torch.save of
                                              {"model", "vae", "conditioner"} state dicts, as 2.1 ships)
  tencent/Hunyuan3D-2/hunyuan3d-dit-v2-0/     config.yaml + model.fp16.safetensors  (one file, keys prefixed
  tencent/Hunyuan3D-2mini/hunyuan3d-dit-v2-mini/                                     model./vae./conditioner.)

The configs name the same classes with the same options as the released ones (DiT, ShapeVAE, DINOv2
conditioner, flow-matching scheduler, image processor); only the sizes are toy. The weights are random,
except the VAE's occupancy head: a random decoder's field has no usable zero level, so its query
projection, final norm and output layer are set to decode a closed blob (the field sum(cos x_i) - 2.6,
about a ball of radius 0.9), with the randomly initialised cross-attention to the latents left in at a
small scale so seed, image, guidance and step count still change the surface.
"""

import argparse
import os
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


def _conditioner(package):
    return {"target": "%s.SingleImageEncoder" % package,
            "params": {"main_image_encoder": {"type": "DinoImageEncoder",
                                              "kwargs": {"config": dict(DINO_TINY), "image_size": 28,
                                                         "use_cls_token": True}}}}


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


MODELS = {
    "2.1": ("hy3dshape.pipelines", "tencent/Hunyuan3D-2.1", "hunyuan3d-dit-v2-1", config_21, "ckpt"),
    "2": ("hy3dgen.shapegen.pipelines", "tencent/Hunyuan3D-2", "hunyuan3d-dit-v2-0", config_20, "safetensors"),
    "2mini": ("hy3dgen.shapegen.pipelines", "tencent/Hunyuan3D-2mini", "hunyuan3d-dit-v2-mini",
              lambda: config_20(depth=1, single_blocks=2), "safetensors"),
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


def build(root, which, seed=0):
    """Write the tiny checkpoints under `root`; returns {model: folder}."""
    import importlib

    written = {}
    for key in which:
        module, repo_id, subfolder, make_config, kind = MODELS[key]
        instantiate = importlib.import_module(module).instantiate_from_config
        torch.manual_seed(seed)
        config = make_config()
        parts = {name: instantiate(config[name]) for name in ("model", "vae", "conditioner")}
        blob_head(parts["vae"])
        folder = os.path.join(root, repo_id, subfolder)
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
        written[key] = folder
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="weights folder to write (use it as GEN3D_WEIGHTS_DIR)")
    parser.add_argument("--only", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    args = parser.parse_args(argv)
    repo = os.environ.get("GEN3D_HUNYUAN21_REPO")
    if "2.1" in args.only:
        if not repo:
            parser.error("building the 2.1 checkpoint needs GEN3D_HUNYUAN21_REPO (its hy3dshape code)")
        sys.path.insert(0, os.path.join(repo, "hy3dshape"))
    for key, folder in build(args.root, args.only).items():
        print("%-6s %s" % (key, folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())
