"""Render a result's GLB from the input view and compare it with the input image (PSNR inside the mask).

The albedo is de-lit (the input's shading is removed so Blender can light the object anew), so the
render is re-lit before comparing: a second-order spherical-harmonics shading of the mesh normals
(9 numbers) is fitted to input / render. Nine numbers cannot hide a flipped or shifted texture.

    python bench/render_psnr.py RESULT_DIR [RESULT_DIR...] [--views right,back,left] [--save-dir DIR]

With --views the result is also rendered from each extra view's camera (DESIGN.md "Coordinates": the
input camera circled about the vertical axis by the view's azimuth) and compared with that view's
preprocessed image, input_<name>.png, the same way.

The GLB is read back (pygltflib), its albedo texture is rendered unlit with a z-buffer from the input
camera that meta.json's `view` records (the upright result turned back by its elevation, then
orthographic, looking down -Z), framed on input.png's foreground, and compared with input.png's RGB
where both the input's alpha and the render cover. A flipped, mirrored or shifted texture drops the
PSNR by many dB, so this catches UV and projection mistakes that file checks cannot.
"""

import argparse
import io
import json
import os
import sys

import numpy as np
import pygltflib
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from backend_local.engines.base import fit_view  # noqa: E402
from backend_local.upright import upright_to_camera  # noqa: E402
from backend_local.texturing import raster  # noqa: E402
from backend_local.engines.builtin.multiview import azimuth_rotation  # noqa: E402
from shared.request import VIEW_AZIMUTHS  # noqa: E402

_COMPONENTS = {pygltflib.FLOAT: np.float32, pygltflib.UNSIGNED_INT: np.uint32,
               pygltflib.UNSIGNED_SHORT: np.uint16, pygltflib.UNSIGNED_BYTE: np.uint8}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _accessor(gltf, blob, index):
    accessor = gltf.accessors[index]
    view = gltf.bufferViews[accessor.bufferView]
    dtype = _COMPONENTS[accessor.componentType]
    start = (view.byteOffset or 0) + (accessor.byteOffset or 0)
    count = accessor.count * _WIDTH[accessor.type]
    data = np.frombuffer(blob, dtype=dtype, count=count, offset=start)
    return data.reshape(accessor.count, -1) if _WIDTH[accessor.type] > 1 else data


def read_glb(path, with_normals=False):
    """(vertices, faces, uvs, {name: PIL image}) of the first primitive and its material's textures
    (and the vertex normals last, when asked)."""
    gltf = pygltflib.GLTF2().load(path)
    blob = gltf.binary_blob()
    primitive = gltf.meshes[0].primitives[0]
    vertices = _accessor(gltf, blob, primitive.attributes.POSITION).astype(np.float64)
    faces = _accessor(gltf, blob, primitive.indices).reshape(-1, 3).astype(np.int64)
    uvs = None
    if primitive.attributes.TEXCOORD_0 is not None:
        uvs = _accessor(gltf, blob, primitive.attributes.TEXCOORD_0).astype(np.float64)
    images = {}
    material = gltf.materials[primitive.material]
    slots = {"baseColor": material.pbrMetallicRoughness.baseColorTexture,
             "metallicRoughness": material.pbrMetallicRoughness.metallicRoughnessTexture,
             "normal": material.normalTexture, "occlusion": material.occlusionTexture}
    for name, info in slots.items():
        if info is None:
            continue
        image = gltf.images[gltf.textures[info.index].source]
        view = gltf.bufferViews[image.bufferView]
        data = blob[view.byteOffset or 0:(view.byteOffset or 0) + view.byteLength]
        images[name] = Image.open(io.BytesIO(data))
    if with_normals:
        return vertices, faces, uvs, images, _accessor(gltf, blob, primitive.attributes.NORMAL).astype(np.float64)
    return vertices, faces, uvs, images


def input_camera_rotation(result_dir, view_name=None):
    """Upright frame -> the input camera's frame, from meta.json's `view` (level front when absent);
    with `view_name`, that extra view's camera (same elevation, circled by its azimuth)."""
    meta_path = os.path.join(result_dir, "meta.json")
    view = {}
    if os.path.isfile(meta_path):
        with open(meta_path) as handle:
            view = json.load(handle).get("view") or {}
    if float(view.get("azimuth_deg", 0.0)) != 0.0:
        raise ValueError("%s: only front (azimuth 0) input cameras are rendered" % result_dir)
    rotation = upright_to_camera(float(view.get("elevation_deg", 0.0)))
    if view_name is not None:
        rotation = rotation @ azimuth_rotation(VIEW_AZIMUTHS[view_name])
    return rotation


def sample_texture(texture, uv):
    """Bilinear sample of an (H, W, C) float texture at glTF UVs (N, 2) (texel centres at +0.5, edges clamped)."""
    th, tw = texture.shape[:2]
    x = np.clip(uv[:, 0] * tw - 0.5, 0, tw - 1)
    y = np.clip(uv[:, 1] * th - 0.5, 0, th - 1)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x1, y1 = np.minimum(x0 + 1, tw - 1), np.minimum(y0 + 1, th - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return (texture[y0, x0] * (1 - fx) * (1 - fy) + texture[y0, x1] * fx * (1 - fy)
            + texture[y1, x0] * (1 - fx) * fy + texture[y1, x1] * fx * fy)


def render_albedo(result_dir, view_name=None):
    """(render RGB, coverage mask, input RGB, input mask, per-pixel normals) at input.png's size
    (or the extra view's input_<name>.png)."""
    vertices, faces, uvs, images, normals = read_glb(os.path.join(result_dir, "mesh.glb"), with_normals=True)
    rotation = input_camera_rotation(result_dir, view_name)
    vertices, normals = vertices @ rotation.T, normals @ rotation.T
    image_file = "input.png" if view_name is None else "input_%s.png" % view_name
    framed = np.asarray(Image.open(os.path.join(result_dir, image_file)).convert("RGBA"))
    size = framed.shape[0]
    view = fit_view(vertices, framed[..., 3])
    tri_px = view.to_pixels(vertices)[faces]
    ids = raster.face_ids(tri_px, size, size, depth=vertices[faces][:, :, 2].max(axis=1))
    flat, face_index, weights = raster.barycentric(ids, tri_px, "cpu")
    texel_uv = (uvs[faces[face_index.numpy()]] * weights.numpy()[:, :, None]).sum(axis=1)
    pixel_normals = np.zeros((size * size, 3))
    pixel_normals[flat.numpy()] = (normals[faces[face_index.numpy()]] * weights.numpy()[:, :, None]).sum(axis=1)
    pixel_normals /= np.maximum(np.linalg.norm(pixel_normals, axis=1, keepdims=True), 1e-12)
    albedo = np.asarray(images["baseColor"].convert("RGB"), dtype=np.float64) / 255.0
    colour = sample_texture(albedo, texel_uv)
    render = np.zeros((size * size, 3))
    render[flat.numpy()] = colour
    covered = np.zeros(size * size, bool)
    covered[flat.numpy()] = True
    return (render.reshape(size, size, 3), covered.reshape(size, size),
            framed[..., :3].astype(np.float64) / 255.0, framed[..., 3] > 250, pixel_normals.reshape(size, size, 3))


def _sh_basis(n):
    x, y, z = n[:, 0], n[:, 1], n[:, 2]
    return np.stack([np.ones_like(x), y, z, x, x * y, y * z, 3 * z * z - 1, x * z, x * x - y * y], axis=1)


def relight(render, target, normals, inside):
    """render x SH(normal) . c, with c fitted by least squares to target / render inside the mask."""
    basis = _sh_basis(normals[inside])
    r, t = render[inside], target[inside]
    # minimise sum |r * s - t|^2 over the shading s = basis . c, all channels together
    a = (basis[:, None, :] * r[:, :, None]).reshape(-1, basis.shape[1])
    coef = np.linalg.lstsq(a, t.reshape(-1), rcond=None)[0]
    lit = render.copy()
    lit[inside] = r * (basis @ coef)[:, None]
    return lit


def _psnr(a, b):
    return 10 * np.log10(1.0 / max(float(((a - b) ** 2).mean()), 1e-12))


def psnr(result_dir, view_name=None):
    """(PSNR of the re-lit render, PSNR of the plain albedo render, re-lit image, compared pixels)."""
    render, covered, target, solid, normals = render_albedo(result_dir, view_name)
    inside = solid & covered
    lit = relight(render, target, normals, inside)
    return _psnr(lit[inside], target[inside]), _psnr(render[inside], target[inside]), lit, inside


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+")
    parser.add_argument("--views", default="", help="also render from these extra views, e.g. right,back,left")
    parser.add_argument("--save-dir")
    parser.add_argument("--json", help="write {result: {view: dB}} here")
    args = parser.parse_args(argv)
    names = [None] + [name for name in args.views.split(",") if name]
    values = {name: [] for name in names}
    table = {}
    for result in args.results:
        for name in names:
            value, albedo_only, render, inside = psnr(result, name)
            values[name].append(value)
            table.setdefault(result, {})[name or "front"] = round(value, 2)
            print("%-40s %-6s PSNR %.2f dB re-lit, %.2f dB albedo only, over %d pixels"
                  % (result, name or "front", value, albedo_only, inside.sum()))
            if args.save_dir:
                os.makedirs(args.save_dir, exist_ok=True)
                label = os.path.basename(os.path.normpath(result)) + ("" if name is None else "_" + name)
                Image.fromarray((render.clip(0, 1) * 255).astype(np.uint8)).save(os.path.join(args.save_dir,
                                                                                              label + ".png"))
    for name in names:
        print("%-40s %-6s PSNR %.2f dB (min %.2f)" % ("MEAN", name or "front", float(np.mean(values[name])),
                                                     float(np.min(values[name]))))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(table, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
