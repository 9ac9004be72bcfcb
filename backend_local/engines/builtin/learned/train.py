"""Train the shape network on procedurally generated renders, seeded and resumable.

    python -m backend_local.engines.builtin.learned.train --out DIR [--steps N] [--batch B] [--lr LR]
        [--seed S] [--device cuda|cpu] [--image-size 128] [--grid 64] [--time-limit SECONDS]
        [--eval-every K] [--checkpoint-every C] [--val-count V] [--widths 32,64,...] [--export]
        [--init WEIGHTS] [--reuse K --chunk N --pool-chunks P]

Every batch is generated on the fly by `render.make_batch` from a generator seeded by (seed, step),
so a resumed run sees exactly the stream an uninterrupted one would. With --reuse K > 1 each generated sample
is used about K times instead, through a replay pool (`pool.py`: chunks of N samples, the last P held,
mirrored and recoloured at random), which is what keeps a GPU busy when generation is slower than the step. `DIR/checkpoint.pt` (model,
optimizer, scheduler, step, RNG states, data and time bookkeeping) is written every C steps, when the
time limit comes and at the end, atomically; a run started on a DIR that holds one continues from it.
--init starts a new run from the weights of an earlier one (a shape_model.safetensors of the same
config), with a fresh optimizer and schedule: how a run that ended is continued for more steps. The time limit counts from the start of the process and stops the run, after at least one step, once
the next step and the checkpoint would not fit in it; the exit status is then 3 (run it again to
continue) instead of 0. At the end, or at any stop with --export, `DIR/shape_model.safetensors` (fp16)
and `DIR/MODEL_CARD.md` are written, with metrics on a fixed validation set generated from seeds that
training never uses. A line per K steps (mean loss and IoU over those steps, validation IoU and
elevation error, s/step) goes to stdout and `DIR/log.jsonl`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch

from . import infer, objective, weights
from .model import ModelConfig, ShapeNet, parameter_count

CHECKPOINT = "checkpoint.pt"
WEIGHTS = "shape_model.safetensors"
CARD = "MODEL_CARD.md"
LOG = "log.jsonl"
EXIT_STOPPED = 3
WEIGHT_DECAY = 1e-4
GRAD_CLIP = 1.0
FINAL_LR_FRACTION = 0.02


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m backend_local.engines.builtin.learned.train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder: checkpoint, log, weights, model card")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--grid", type=int, default=64)
    p.add_argument("--widths", default=",".join(map(str, ModelConfig.widths)), help="channels per encoder level")
    p.add_argument("--time-limit", type=float, default=None, help="seconds from process start; then checkpoint and stop")
    p.add_argument("--eval-every", type=int, default=100, help="steps between log lines (with validation)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--val-count", type=int, default=256, help="size of the fixed validation set")
    p.add_argument("--export", action="store_true", help="write weights and model card even when stopped early")
    p.add_argument("--init", help="start from these weights (same config) instead of random ones; ignored on resume. "
                   "Give it a lower --lr (e.g. 5e-4): a fresh optimizer warmed up to 2e-3 undid a trained run's gains "
                   "(validation IoU 0.379 -> 0.305 over 339 steps)")
    p.add_argument("--reuse", type=float, default=1.0, help="times each generated sample is used (1: fresh batches only)")
    p.add_argument("--chunk", type=int, default=256, help="samples generated at once for the replay pool")
    p.add_argument("--pool-chunks", type=int, default=8, help="chunks the replay pool holds")
    return p.parse_args(argv)


def data_seed(stream: str, seed: int, index: int) -> int:
    """A 63-bit generator seed per (stream, seed, index): training batches and validation chunks never share one."""
    digest = hashlib.sha256(("%s:%d:%d" % (stream, seed, index)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def generated_batch(stream, seed, index, count, device, image_size, grid):
    from .render import make_batch  # the data side; imported late so the model is usable without it

    generator = torch.Generator(device=device)
    generator.manual_seed(data_seed(stream, seed, index))
    return make_batch(count, generator, device, image_size=image_size, grid=grid)


def validation_set(args, device):
    """Fixed held-out batches (seeded by the 'val' stream alone, so every run is measured on the same set)."""
    chunk = max(1, min(args.batch, 64))
    batches = []
    for i, start in enumerate(range(0, args.val_count, chunk)):
        b = generated_batch("val", 0, i, min(chunk, args.val_count - start), device, args.image_size, args.grid)
        batches.append({"rgba": b["rgba"], "occupancy": b["occupancy"].to(torch.uint8),
                        "elevation": b["elevation"], "family": list(b["family"])})
    return batches


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(model, batches, device):
    """Mean IoU, mean elevation error (degrees) and per-family IoU on the validation batches."""
    was_training = model.training
    model.eval()
    ious, filled_ious, errors, conf, families = [], [], [], [], []
    for b in batches:
        with autocast(device):
            out = model(b["rgba"])
        ious.append(objective.hard_iou(out["occupancy_logits"], b["occupancy"]).cpu())
        filled = infer.fill_outline_rays(torch.sigmoid(out["occupancy_logits"].float()), b["rgba"][:, 3])
        filled_ious.append(objective.hard_iou(filled - 0.5, b["occupancy"]).cpu())   # > 0 where p > 0.5, as a logit
        errors.append(objective.elevation_error_deg(out["elevation"], b["elevation"]).cpu())
        conf.append(torch.sigmoid(out["confidence_logit"].float()).cpu())
        families += b["family"]
    model.train(was_training)
    iou, err, conf = torch.cat(ious), torch.cat(errors), torch.cat(conf)
    per_family = collections.defaultdict(list)
    for name, value in zip(families, iou.tolist()):
        per_family[name].append(value)
    corr = float(torch.corrcoef(torch.stack([iou, conf]))[0, 1]) if len(iou) > 2 and iou.std() > 0 and conf.std() > 0 else None
    return {"val_iou": float(iou.mean()), "val_iou_filled": float(torch.cat(filled_ious).mean()),
            "val_elevation_deg": float(err.mean()),
            "val_elevation_deg_median": float(err.median()), "val_confidence_corr": corr,
            "val_iou_by_family": {k: float(np.mean(v)) for k, v in sorted(per_family.items())},
            "val_count_by_family": {k: len(v) for k, v in sorted(per_family.items())}}


def lr_factor(steps):
    warmup = max(1, min(1000, steps // 20))

    def factor(step):
        if step < warmup:
            return (step + 1) / warmup
        t = min(1.0, (step - warmup) / max(1, steps - warmup))
        return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def rng_states():
    states = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    torch.set_rng_state(states["torch"])
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def atomic_torch_save(obj, path):
    tmp = path + ".tmp"
    torch.save(obj, tmp)
    os.replace(tmp, path)


def log_line(out_dir, record):
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    with open(os.path.join(out_dir, LOG), "a") as f:
        f.write(line + "\n")


def write_model_card(path, state, args, config, metrics, n_params):
    families = state["families"]
    lines = [
        "# Gen3D built-in shape model",
        "",
        "Pixel-aligned occupancy network (`backend_local/engines/builtin/learned/model.py`): RGBA crop %d x %d "
        "-> occupancy %d^3 [depth, row, col] in the normalised camera frame, camera elevation, confidence."
        % (config.image_size, config.image_size, config.grid),
        "",
        "## Model",
        "",
        "- parameters: %d (%.1f MB as fp16 safetensors); encoder widths %s" % (n_params, n_params * 2 / 1e6, list(config.widths)),
        "",
        "## Data",
        "",
        ("Procedural renders from `render.make_batch`, generated on the fly, never repeated; seed %d." % args.seed
         if args.reuse <= 1 else
         "Procedural renders from `render.make_batch`, generated on the fly in chunks of %d, each used about %g "
         "times through a replay pool of %d chunks (mirrored and recoloured at random); seed %d."
         % (args.chunk, args.reuse, args.pool_chunks, args.seed)),
        "Samples generated: %d; drawn for training: %d. Generated, by family:" % (
            sum(families.values()), state["step"] * args.batch),
        "",
    ]
    lines += ["- %s: %d" % (name, count) for name, count in sorted(families.items())]
    lines += [
        "",
        "## Training",
        "",
        "- steps: %d of %d, batch %d, AdamW lr %g (warmup + cosine), weight decay %g" % (
            state["step"], args.steps, args.batch, args.lr, WEIGHT_DECAY),
        "- wall time: %.0f s over %d session(s)" % (state["wall_time"], state["sessions"]),
        "- started from: %s" % ("random weights (seed %d)" % args.seed if not state.get("init") else
                                "%s (%s)" % (state["init"]["path"], json.dumps(state["init"]["summary"], sort_keys=True))),
        "- devices: %s" % ", ".join(state["devices"]),
        "",
        "## Validation",
        "",
        "Fixed set of %d generated samples (seeds of the 'val' stream, which training never draws)." % args.val_count,
        "",
        "- occupancy IoU (threshold 0.5): %.4f" % metrics["val_iou"],
        "- occupancy IoU with the outline's rays filled (what the engine meshes, `infer.fill_outline_rays`): %.4f"
        % metrics["val_iou_filled"],
        "- elevation error: mean %.2f deg, median %.2f deg" % (metrics["val_elevation_deg"], metrics["val_elevation_deg_median"]),
        "- correlation of confidence with IoU: %s" % ("n/a" if metrics["val_confidence_corr"] is None
                                                     else "%.3f" % metrics["val_confidence_corr"]),
        "",
        "IoU by family:",
        "",
    ]
    lines += ["- %s: %.4f (%d samples)" % (name, value, metrics["val_count_by_family"][name])
              for name, value in metrics["val_iou_by_family"].items()]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest convolutions
    config = ModelConfig(image_size=args.image_size, grid=args.grid, widths=tuple(int(w) for w in args.widths.split(",")))

    torch.manual_seed(args.seed)
    model = ShapeNet(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=WEIGHT_DECAY)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(args.steps))
    state = {"step": 0, "families": {}, "wall_time": 0.0, "sessions": 0, "devices": [], "init": None}

    checkpoint_path = os.path.join(args.out, CHECKPOINT)
    resumed = os.path.exists(checkpoint_path)
    saved_rng = None
    if resumed:
        ckpt = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if ckpt["config"] != config.to_json():
            raise SystemExit("%s was trained with config %s, not %s" % (checkpoint_path, ckpt["config"], config.to_json()))
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        saved_rng = ckpt["rng"]
    elif args.init:
        start = weights.load(args.init)
        if start.config.to_json() != config.to_json():
            raise SystemExit("%s has config %s, not %s" % (args.init, start.config.to_json(), config.to_json()))
        model.load_state_dict(start.state_dict())
        summary = json.loads(weights.read_metadata(args.init).get("summary") or "{}")
        state["init"] = {"path": os.path.basename(args.init), "summary": summary}
    state["sessions"] += 1
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    if device_name not in state["devices"]:
        state["devices"].append(device_name)
    families = collections.Counter(state["families"])
    pool = None
    if args.reuse > 1:
        from .pool import SamplePool

        pool = SamplePool(lambda index: generated_batch("train-chunk", args.seed, index, args.chunk, device,
                                                        args.image_size, args.grid),
                          lambda step: data_seed("pick", args.seed, step), args.batch, args.chunk, args.reuse,
                          args.pool_chunks)

    val = validation_set(args, device)
    if saved_rng is not None:  # after the validation set, so its generation cannot shift the stream
        set_rng_states(saved_rng)
    n_params = parameter_count(model)
    log_line(args.out, {"event": "resume" if resumed else "start", "step": state["step"], "steps": args.steps,
                        "batch": args.batch, "device": device_name, "params": n_params})

    def save_checkpoint():
        state["families"] = dict(families)
        state["wall_time"] = session_wall_base + (time.monotonic() - started)
        atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                           "scheduler": scheduler.state_dict(), "state": state, "rng": rng_states(),
                           "config": config.to_json(), "args": vars(args)}, checkpoint_path)

    session_wall_base = state["wall_time"]
    model.train()
    window = collections.defaultdict(list)
    step_times, checkpoint_seconds, stopped = [], 1.0, False
    while state["step"] < args.steps:
        t0 = time.monotonic()
        if pool is None:
            batch = generated_batch("train", args.seed, state["step"], args.batch, device, args.image_size, args.grid)
            families.update(batch["family"])
        else:
            batch = pool.draw(state["step"])
            families.update(pool.generated_families)
            pool.generated_families.clear()
        with autocast(device):
            out = model(batch["rgba"])
        loss, parts = objective.shape_losses(out, batch["occupancy"], batch["elevation"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        window["loss"].append(loss.detach())  # tensors: no device sync per step
        window["iou"].append(parts["iou_per_image"].mean())
        step_times.append(time.monotonic() - t0)

        if state["step"] % args.eval_every == 0 or state["step"] == args.steps:
            record = {"step": state["step"], "loss": float(torch.stack(window["loss"]).mean()),
                      "iou": float(torch.stack(window["iou"]).mean()),
                      "s_per_step": float(np.mean(step_times[-len(window["loss"]):])), "lr": scheduler.get_last_lr()[0],
                      "elapsed_s": time.monotonic() - started}
            metrics = evaluate(model, val, device)
            record.update({k: v for k, v in metrics.items() if not k.startswith("val_count")})
            log_line(args.out, record)
            window.clear()
        elapsed = time.monotonic() - started
        next_step = float(np.mean(step_times[-20:]))
        out_of_time = args.time_limit is not None and elapsed + 1.5 * next_step + 2 * checkpoint_seconds > args.time_limit
        if state["step"] % args.checkpoint_every == 0 or state["step"] == args.steps or out_of_time:
            t1 = time.monotonic()
            save_checkpoint()
            checkpoint_seconds = time.monotonic() - t1
        if out_of_time and state["step"] < args.steps:
            stopped = True
            break
    if not os.path.exists(checkpoint_path):  # --steps 0 on a new folder: still leave a resumable state
        save_checkpoint()

    if stopped:
        log_line(args.out, {"event": "stopped", "step": state["step"], "reason": "time limit",
                            "elapsed_s": time.monotonic() - started})
    if not stopped or args.export:
        state["families"] = dict(families)
        state["wall_time"] = session_wall_base + (time.monotonic() - started)
        metrics = evaluate(model, val, device)
        summary = {"step": state["step"], "steps": args.steps, "seed": args.seed,
                   "val_iou": metrics["val_iou"], "val_elevation_deg": metrics["val_elevation_deg"]}
        weights.save(os.path.join(args.out, WEIGHTS), model, summary)
        write_model_card(os.path.join(args.out, CARD), state, args, config, metrics, n_params)
        log_line(args.out, {"event": "exported", "step": state["step"], **summary})
    return EXIT_STOPPED if stopped else 0


if __name__ == "__main__":
    sys.exit(main())
