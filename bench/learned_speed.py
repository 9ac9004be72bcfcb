"""Warm inference time of the learned shape network, and of the surface extraction after it.

    python bench/learned_speed.py [--device cpu|cuda] [--threads 2] [--runs 10] [--weights FILE]

Batch 1, the default config (128 x 128 crop -> 64^3 occupancy), after two warm-up runs; prints the
median network ms per image (target: <= 1000 ms on a 2-core CPU), marching cubes ms on the output,
the parameter count and the fp16 weight size. Without --weights the network is freshly initialised
(the time does not depend on the values), and its occupancy is replaced by a sphere for the surface.
"""

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

from backend_local.engines.builtin.learned import infer  # noqa: E402
from backend_local.engines.builtin.learned.model import ShapeNet, parameter_count  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--weights", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = infer.load(args.weights, device) if args.weights else ShapeNet().to(device).eval()
    s, g = model.config.image_size, model.config.grid

    # A disc on a plain colour: the network's time does not depend on the content.
    yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")
    alpha = (((xx - s / 2) ** 2 + (yy - s / 2) ** 2) <= (s / 2.4) ** 2).float()
    crop = torch.stack([alpha * 0.8, alpha * 0.5, alpha * 0.3, alpha], -1).numpy()

    times = []
    for i in range(args.runs + 2):
        sync(device)
        t0 = time.perf_counter()
        prob, _ = infer.predict(model, crop)
        sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    if args.weights is None or not (prob > 0.5).any():
        c = (torch.arange(g) + 0.5) / g * 2 - 1
        z, y, x = torch.meshgrid(c, -c, c, indexing="ij")
        prob = ((x ** 2 + y ** 2 + z ** 2) <= (1 / 1.2) ** 2).float()
    mc = []
    for _ in range(3):
        t0 = time.perf_counter()
        vertices, faces = infer.occupancy_to_mesh(prob)
        mc.append(time.perf_counter() - t0)
    n = parameter_count(model)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu, %d threads" % args.threads
    print("device: %s" % name)
    print("network: %.1f ms per image (median of %d, batch 1, %dx%d -> %d^3)" % (
        1000 * statistics.median(times), args.runs, s, s, g))
    print("marching cubes: %.1f ms (%d faces)" % (1000 * statistics.median(mc), len(faces)))
    print("parameters: %d, fp16 weights %.1f MB" % (n, 2 * n / 1e6))


if __name__ == "__main__":
    main()
