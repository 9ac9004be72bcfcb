"""The shipped weights file: fp16 safetensors with the model's config (and a training summary) as metadata."""

from __future__ import annotations

import json
import os

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .model import ModelConfig, ShapeNet

FORMAT = "gen3d-shape-model"


def save(path: str, model: ShapeNet, summary: dict | None = None) -> None:
    """Write fp16 weights atomically (a partial file never takes the real name)."""
    tensors = {name: t.detach().to("cpu", torch.float16).contiguous() for name, t in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": model.config.to_json(), "version": str(model.config.version),
                "summary": json.dumps(summary or {}, sort_keys=True)}
    tmp = path + ".tmp"
    save_file(tensors, tmp, metadata=metadata)
    os.replace(tmp, path)


def read_metadata(path: str) -> dict:
    with safe_open(path, framework="pt") as f:
        return dict(f.metadata() or {})


def load(path: str, device="cpu") -> ShapeNet:
    """The network in eval mode, fp32 parameters on `device` (fp16 is only the storage format)."""
    metadata = read_metadata(path)
    if metadata.get("format") != FORMAT:
        raise ValueError("%s is not a Gen3D shape model (format %r)" % (path, metadata.get("format")))
    model = ShapeNet(ModelConfig.from_json(metadata["config"]))
    with safe_open(path, framework="pt") as f:
        state = {name: f.get_tensor(name).float() for name in f.keys()}
    model.load_state_dict(state)
    return model.to(device).eval()
