"""The engine's choice between the learned shape and the hand-made priors, fitted on generated objects.

    python -m backend_local.engines.builtin.learned.selector --weights IN --out OUT [--count 1024]
        [--image-size 256] [--seed 0] [--device cpu|cuda]

The network's own confidence (its expected IoU) is the wrong selector: it is highest on spheres, cones and
mugs, where the priors are best too (docs/LEARNED.md). What the engine needs is the chance that the network
beats the priors on this image. This command renders `count` objects of the 'selector' stream (seeds that
neither training nor validation draws), scores both shapes on each against the render's occupancy
(`compare`), and refits the confidence output alone (a logistic regression on the heads' hidden layer, the
rest of the network unchanged) to P(learned IoU > priors IoU). OUT is the same model with that output; its
metadata and a `.selector.json` beside it hold the held-out fifth's figures: the selector's accuracy and the
mean IoU of the priors alone, the network alone, the selected mix and an oracle. The engine then uses the
learned shape when this probability reaches `learned_shape.MIN_CONFIDENCE` (0.5: more likely than not).
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

from . import infer, train, weights
from .model import ShapeNet

STREAM = "selector"
HELD_OUT = 0.2


def network_view(rgba: torch.Tensor, size: int) -> np.ndarray:
    """A render (4, S, S) as the network sees renders in training: the same window at its input size
    (premultiplied area average), so its occupancy lines up with the render's cell for cell (frame_crop's
    window would not: the renders' margins vary from 1.1 to 1.3 around its 1.2)."""
    t = infer.resample_straight(rgba.float().cpu()[None], size, mode="area")
    return t[0].permute(1, 2, 0).numpy()


def centred_on(occupied: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """`occupied` (G, G, G) bool [depth, row, col] shifted along depth so its extent's centre is the truth's:
    the priors place depth about the image plane, the network where it learned to, and the engine centres
    its output on the bounding box anyway."""
    def mid(grid):
        depths = torch.nonzero(grid.any(2).any(1)).flatten()
        return None if depths.numel() == 0 else 0.5 * float(depths.min() + depths.max())

    a, b = mid(occupied), mid(truth)
    if a is None or b is None:
        return occupied
    shift, g = int(round(b - a)), occupied.shape[0]
    out = torch.zeros_like(occupied)
    if shift >= 0:
        out[shift:] = occupied[:g - shift]
    else:
        out[:g + shift] = occupied[-shift:]
    return out


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = int((a | b).sum())
    return int((a & b).sum()) / union if union else 1.0


def priors_occupancy(rgba_u8: np.ndarray, grid: int) -> torch.Tensor:
    """The priors' solid (shape.reconstruct_field) at the cell centres of the image's window, (G, G, G) bool."""
    from .. import shape as shape_model

    field = shape_model.reconstruct_field(rgba_u8, torch.device("cpu"))
    s = rgba_u8.shape[0]
    c = (torch.arange(grid, dtype=torch.float32) + 0.5) / grid * 2 - 1
    d, r, k = torch.meshgrid(c, -c, c, indexing="ij")        # depth (far first), row (top first), col
    points = torch.stack([k, r, d], -1) * (s / 2.0)          # the pixel frame: origin at the centre, y up
    return (shape_model.evaluate(field, points.reshape(-1, 3)) < 0).reshape(grid, grid, grid).cpu()


def predict_with_features(model: ShapeNet, rgba_crop: np.ndarray):
    """infer.predict_all for one crop, and the heads' hidden layer (after its SiLU) of that same forward
    pass: what the confidence output reads."""
    seen = {}
    handle = model.global_head[1].register_forward_hook(lambda module, inputs, output: seen.update(h=output))
    try:
        prediction = infer.predict_all(model, rgba_crop)
    finally:
        handle.remove()
    return prediction, seen["h"][0].float().cpu()


def compare(model: ShapeNet, count: int, image_size: int = 256, seed: int = 0, batch: int = 16,
            device="cpu", progress=None) -> list:
    """Per generated sample: family, the network's and the priors' IoU against the render, the network's
    confidence, and the heads' hidden features."""
    grid, rows = model.config.grid, []
    for start in range(0, count, batch):
        b = train.generated_batch(STREAM, seed, start // batch, min(batch, count - start), torch.device(device),
                                  image_size, grid)
        for i in range(len(b["family"])):
            truth = b["occupancy"][i].cpu() > 0.5
            rgba_u8 = (b["rgba"][i].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            crop = network_view(b["rgba"][i], model.config.image_size)
            pred, features = predict_with_features(model, crop)
            learned = (infer.fill_outline_rays(pred.probabilities, crop[..., 3]) > 0.5).cpu()
            rows.append({"family": b["family"][i], "learned": iou(centred_on(learned, truth), truth),
                         "priors": iou(centred_on(priors_occupancy(rgba_u8, grid), truth), truth),
                         "confidence": pred.confidence, "features": features})
        if progress:
            progress(len(rows))
    return rows


def fit(model: ShapeNet, rows: list, steps: int = 2000, weight_decay: float = 1e-2) -> dict:
    """Refit the confidence output to P(learned beats priors) on the first (1 - HELD_OUT) of `rows`, in place;
    the held-out rest's figures."""
    x = torch.stack([r["features"] for r in rows])
    y = torch.tensor([float(r["learned"] > r["priors"]) for r in rows])
    n_fit = int(round(len(rows) * (1 - HELD_OUT)))
    layer = model.global_head[2]
    w = layer.weight[1].detach().clone().requires_grad_(True)
    bias = layer.bias[1:2].detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([w, bias], lr=1e-2)
    for _ in range(steps):
        logit = x[:n_fit] @ w + bias
        loss = F.binary_cross_entropy_with_logits(logit, y[:n_fit]) + weight_decay * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        layer.weight[1].copy_(w)
        layer.bias[1:2].copy_(bias)
        chance = torch.sigmoid(x[n_fit:] @ w + bias)
    held = rows[n_fit:]
    pick = chance >= 0.5
    learned = np.array([r["learned"] for r in held])
    priors = np.array([r["priors"] for r in held])
    return {"samples_fitted": n_fit, "samples_held_out": len(held),
            "learned_wins": float(y[n_fit:].mean()), "accuracy": float((pick == (y[n_fit:] > 0.5)).float().mean()),
            "chosen_learned": float(pick.float().mean()),
            "iou_priors": float(priors.mean()), "iou_learned": float(learned.mean()),
            "iou_selected": float(np.where(pick.numpy(), learned, priors).mean()),
            "iou_oracle": float(np.maximum(learned, priors).mean())}


def by_family(rows: list) -> dict:
    """Mean IoU of both shapes and the network's win rate, per family, over all rows."""
    out = {}
    for name in sorted({r["family"] for r in rows}):
        group = [r for r in rows if r["family"] == name]
        out[name] = {"n": len(group), "learned": float(np.mean([r["learned"] for r in group])),
                     "priors": float(np.mean([r["priors"] for r in group])),
                     "learned_wins": float(np.mean([r["learned"] > r["priors"] for r in group]))}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m backend_local.engines.builtin.learned.selector",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=1024)
    p.add_argument("--image-size", type=int, default=256, help="render size (the priors' input; the network's is its own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    model = weights.load(args.weights, args.device)
    rows = compare(model, args.count, args.image_size, args.seed, device=args.device,
                   progress=lambda n: print("%d samples" % n, file=sys.stderr, flush=True))
    figures = fit(model, rows)
    figures["by_family"] = by_family(rows)
    summary = json.loads(weights.read_metadata(args.weights).get("summary", "{}"))
    summary["selector"] = dict(figures, count=args.count, seed=args.seed, image_size=args.image_size)
    weights.save(args.out, model, summary)
    with open(args.out + ".selector.json", "w") as f:
        json.dump({"figures": figures, "rows": [{k: v for k, v in r.items() if k != "features"} for r in rows]}, f, indent=1)
    print(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
