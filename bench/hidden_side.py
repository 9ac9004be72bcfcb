"""Contact sheet of results seen from the front, the back and above: how the hidden side is textured.

    python bench/hidden_side.py OUT.png --row LABEL RESULT_DIR [RESULT_DIR...] [--row LABEL DIR...]
        [--cases mug,teapot,...] [--size 192]

Each --row is one set of results (e.g. before and after a change); every case is shown in each row
from its input camera (front), from the back at the same elevation, and from above and behind
(elevation 60). The albedo texture is drawn with a mild headlight shading (0.6 + 0.4 cos) so the
shape reads without hiding the texture; the front view is what the input image shows, the other two
are what a single image cannot see.
"""

import argparse
import json
import os
import sys

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.mesh_render import view_rotation  # noqa: E402
from bench.render_psnr import read_glb, sample_texture  # noqa: E402
from backend_local.texturing import raster  # noqa: E402


def render(result_dir, azimuth_deg, elevation_deg, size):
    """RGB uint8 (size, size) of the result's albedo from this camera (white background)."""
    vertices, faces, uvs, images, normals = read_glb(os.path.join(result_dir, "mesh.glb"), with_normals=True)
    centre = (vertices.min(0) + vertices.max(0)) / 2
    rotation = view_rotation(azimuth_deg, elevation_deg)
    cam = (vertices - centre) @ rotation.T
    cam_n = normals @ rotation.T
    scale = size / 2.6
    tri_px = np.stack([size / 2 + cam[:, 0] * scale, size / 2 - cam[:, 1] * scale], 1)[faces]
    ids = raster.face_ids(tri_px, size, size, depth=cam[faces][:, :, 2].max(axis=1))
    flat, face_index, weights = raster.barycentric(ids, tri_px, "cpu")
    tri = faces[face_index.numpy()]
    w = weights.numpy()[:, :, None]
    albedo = np.asarray(images["baseColor"].convert("RGB"), dtype=np.float64) / 255.0
    colour = sample_texture(albedo, (uvs[tri] * w).sum(1))
    n = (cam_n[tri] * w).sum(1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    colour = colour * (0.6 + 0.4 * np.abs(n[:, 2:3]))
    out = np.ones((size * size, 3))
    out[flat.numpy()] = colour
    return (np.clip(out.reshape(size, size, 3), 0, 1) * 255 + 0.5).astype(np.uint8)


def _elevation(result_dir):
    with open(os.path.join(result_dir, "meta.json")) as handle:
        return float((json.load(handle).get("view") or {}).get("elevation_deg", 0.0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--row", nargs="+", action="append", required=True, metavar="LABEL DIR",
                        help="a label, then the result folder holding one sub-folder per case")
    parser.add_argument("--cases", default="mug,teapot,bowl,toy_car,chess_pair,sneaker")
    parser.add_argument("--size", type=int, default=160)
    args = parser.parse_args(argv)
    cases = args.cases.split(",")
    size = args.size
    cameras = [("front", None, 0.0), ("back", None, 180.0), ("above", 60.0, 180.0)]
    label_h = 18
    sheet = Image.new("RGB", (size * 3 * len(cases), (size + label_h) * len(args.row)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (label, folder) in enumerate((row[0], row[1]) for row in args.row):
        for c, case in enumerate(cases):
            result = os.path.join(folder, case)
            elevation = _elevation(result)
            for k, (name, fixed, azimuth) in enumerate(cameras):
                image = render(result, azimuth, elevation if fixed is None else fixed, size)
                x, y = (c * 3 + k) * size, r * (size + label_h)
                sheet.paste(Image.fromarray(image), (x, y + label_h))
                draw.text((x + 3, y + 3), "%s %s %s" % (label, case, name), fill=(0, 0, 0))
    sheet.save(args.out, optimize=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
