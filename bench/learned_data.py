"""Throughput of the learned model's on-the-fly training data, and a contact sheet to look at.

    python bench/learned_data.py [--device cpu|cuda] [--count 16] [--repeats 2] [--sheet PATH]
                                 [--sheet-count 64] [--seed 0] [--no-shadows] [--threads N]

Times make_batch at 128 px / 64^3 (the training size) after one warm-up batch and prints samples
per second. With --sheet, renders --sheet-count objects at 128 px and writes them as a grid on a
grey backdrop, each labelled with its family and elevation, with the occupancy grid's silhouette
(max over depth) as a small inset, so a person can check that renders and targets agree.
"""

import argparse
import math
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from backend_local.engines.builtin.learned.render import make_batch  # noqa: E402


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def throughput(device, count, repeats, image_size, grid, shadows):
    gen = torch.Generator(device="cpu").manual_seed(1234)
    make_batch(count, gen, device, image_size, grid, shadows=shadows)  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        make_batch(count, gen, device, image_size, grid, shadows=shadows)
    _sync(device)
    return count * repeats / (time.perf_counter() - start)


def contact_sheet(batch, path, columns=8):
    rgba = batch["rgba"].cpu()
    occ = batch["occupancy"].cpu().amax(1)  # silhouette of the grid, (B, G, G)
    count, _, size, _ = rgba.shape
    rows = math.ceil(count / columns)
    label = 12
    sheet = Image.new("RGB", (columns * size, rows * (size + label)), (96, 96, 96))
    draw = ImageDraw.Draw(sheet)
    for i in range(count):
        x, y = (i % columns) * size, (i // columns) * (size + label)
        # Alternate two backdrop greys so white and black objects both show.
        grey = 0.35 if (i + i // columns) % 2 else 0.6
        a = rgba[i, 3:4]
        img = rgba[i, :3] * a + grey * (1 - a)
        tile = Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        inset = Image.fromarray((occ[i].numpy() * 255).astype(np.uint8)).resize((size // 4, size // 4))
        tile.paste(inset, (size - size // 4, 0))
        sheet.paste(tile, (x, y + label))
        elev = math.degrees(float(batch["elevation"][i]))
        draw.text((x + 2, y), f"{batch['family'][i][:10]} {elev:.0f}", fill=(255, 255, 255))
    sheet.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--count", type=int, default=16, help="objects per timed batch")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sheet", help="write a contact sheet PNG here")
    parser.add_argument("--sheet-count", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-shadows", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads (on a shared CPU, 1 can be faster)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shadows = not args.no_shadows
    for image_size, grid in ((128, 64), (64, 32)):
        rate = throughput(device, args.count, args.repeats, image_size, grid, shadows)
        print(f"{args.device} make_batch image {image_size} grid {grid} batch {args.count}: "
              f"{rate:.1f} samples/s")
    if args.sheet:
        gen = torch.Generator(device="cpu").manual_seed(args.seed)
        batch = make_batch(args.sheet_count, gen, device, 128, 64, shadows=shadows)
        contact_sheet(batch, args.sheet)
        print(f"sheet: {args.sheet} ({args.sheet_count} renders)")


if __name__ == "__main__":
    main()
