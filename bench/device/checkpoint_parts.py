"""Carry a training run between device calls: what comes back from a call is at most 8 files of 16 MiB and
what travels to one at most 64 MiB, while the shape model's checkpoint (fp32 weights + AdamW's two moments)
is about 80 MB. `split` writes a compact copy: weights stay fp32 (exact), the optimizer's float moments
become bf16 (AdamW's moments need no more precision than that), cut into parts of at most 15 MiB, beside
the run's log, weights and model card. `join` puts the checkpoint back together, moments as fp32 again.

    python bench/device/checkpoint_parts.py split RUN_DIR PARTS_DIR
    python bench/device/checkpoint_parts.py join PARTS_DIR RUN_DIR
"""

import glob
import io
import os
import shutil
import sys

import torch

CHECKPOINT = "checkpoint.pt"
PART = "checkpoint.part%02d"
PART_BYTES = 15 * 1024 * 1024
SIDE_FILES = ("log.jsonl", "MODEL_CARD.md", "shape_model.safetensors")


def _moments(value, to_dtype, from_dtype):
    if isinstance(value, torch.Tensor):
        return value.to(to_dtype) if value.dtype == from_dtype and value.dim() > 0 else value
    if isinstance(value, dict):
        return {key: _moments(item, to_dtype, from_dtype) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_moments(item, to_dtype, from_dtype) for item in value)
    return value


def _side_files(source_dir, target_dir):
    """The run's log, weights and model card (those present) copied as they are, into a folder made for them."""
    os.makedirs(target_dir, exist_ok=True)
    for name in SIDE_FILES:
        if os.path.isfile(os.path.join(source_dir, name)):
            shutil.copy(os.path.join(source_dir, name), target_dir)


def split(run_dir, parts_dir):
    _side_files(run_dir, parts_dir)
    source = os.path.join(run_dir, CHECKPOINT)
    if not os.path.isfile(source):
        return 0
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    checkpoint["optimizer"]["state"] = _moments(checkpoint["optimizer"]["state"], torch.bfloat16, torch.float32)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    count = 0
    for count, start in enumerate(range(0, len(data), PART_BYTES), 1):
        with open(os.path.join(parts_dir, PART % (count - 1)), "wb") as handle:
            handle.write(data[start:start + PART_BYTES])
    return count


def join(parts_dir, run_dir):
    _side_files(parts_dir, run_dir)
    parts = sorted(glob.glob(os.path.join(parts_dir, "checkpoint.part*")))
    if not parts:
        return False
    data = b"".join(open(part, "rb").read() for part in parts)
    checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    checkpoint["optimizer"]["state"] = _moments(checkpoint["optimizer"]["state"], torch.float32, torch.bfloat16)
    torch.save(checkpoint, os.path.join(run_dir, CHECKPOINT + ".tmp"))
    os.replace(os.path.join(run_dir, CHECKPOINT + ".tmp"), os.path.join(run_dir, CHECKPOINT))
    return True


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("split", "join"):
        raise SystemExit(__doc__)
    result = (split if sys.argv[1] == "split" else join)(sys.argv[2], sys.argv[3])
    print("%s: %s" % (sys.argv[1], result))
