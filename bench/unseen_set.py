"""Build the unseen shape set: test objects the project was never developed on, in the dev set's format.

    python bench/unseen_set.py --mirror DIR --out OUT [--only NAMES] [--seed S] [--supersample N]

DIR is a checkout or bare git mirror of github.com/alecjacobson/common-3d-test-models (scanned and
artist-made meshes; read from it, never copied into this repository: test only, never training data).
Besides those, the eight procedural SDF objects of bench/fg_objects.py are meshed (marching cubes) and
added as `sdf_<name>`. Each OUT/<name>/ gets what DESIGN.md "Test data" lists for a dev case: gt.glb
(upright, glTF axes, front +Z, centred on its bounding box with the largest side 1.8 as the dev set's),
camera.json (same keys), input.png (RGBA, anti-aliased alpha), input_bg.png (on a plain backdrop) and
view_right/back/left.png, rendered with bench/mesh_render.py. Elevation (0-30 degrees), material and
backdrop are drawn per model from the seed, so a rebuild gives the same set.

Score the built-in engine on it with bench/unseen_quality.sh OUT RESULTS.
"""

import argparse
import colorsys
import io
import json
import math
import os
import subprocess
import sys
import time
import zipfile
import zlib

import numpy as np
import trimesh
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mesh_render  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from backend_local import mesh_ops  # noqa: E402

SIZE = 512
ORTHO_SCALE = 2.4
DISTANCE = 6.0
HALF_EXTENT = 0.9          # dev gt.glb: centred, largest side 1.8
VIEWS = (("front", "input.png", 0), ("right", "view_right.png", 90), ("back", "view_back.png", 180),
         ("left", "view_left.png", 270))

# name: (file in data/ of the mirror (zip:member for one inside a zip), up axis, front axis, yaw).
# up / front: the source mesh's axes that become +Y (up) and +Z (facing the camera); yaw then turns the
# object about the vertical by that many degrees (positive: its front towards the viewer's right), for
# the three-quarter or profile view a person would take. Decided by looking at renders (docs/UNSEEN.md).
MODELS = {
    "bunny": ("stanford-bunny.obj", "+y", "-x", 50),
    "spot": ("spot.obj", "+y", "-z", -35),
    "cow": ("cow.obj", "+y", "+x", 60),
    "horse": ("horse.zip:horse.ply", "+z", "+y", -65),
    "homer": ("homer.obj", "+y", "+z", 15),
    "cheburashka": ("cheburashka.obj", "+y", "+z", -10),
    "beast": ("beast.obj", "+y", "+z", 20),
    "ogre": ("ogre.obj", "+y", "+z", -20),
    "nefertiti": ("nefertiti.obj", "+z", "-y", 25),
    "igea": ("igea.ply", "+y", "+z", -15),
    "beetle": ("beetle-alt.obj", "+y", "+z", 35),
    "rocker_arm": ("rocker-arm.obj", "+y", "+x", 0),
    "fandisk": ("fandisk.obj", "+z", "-y", 30),
}

AXES = {"+x": (1, 0, 0), "-x": (-1, 0, 0), "+y": (0, 1, 0), "-y": (0, -1, 0), "+z": (0, 0, 1), "-z": (0, 0, -1)}


# --- geometry ---------------------------------------------------------------------------------

def orientation(up, front, yaw_deg=0.0):
    """Rotation taking the source axes `up` to +Y and `front` to +Z, then `yaw_deg` about +Y."""
    u, f = np.array(AXES[up], float), np.array(AXES[front], float)
    if abs(u @ f) > 1e-9:
        raise ValueError("up %s and front %s are not perpendicular" % (up, front))
    base = np.stack([np.cross(u, f), u, f])
    t = math.radians(yaw_deg)
    turn = np.array([[math.cos(t), 0, math.sin(t)], [0, 1, 0], [-math.sin(t), 0, math.cos(t)]])
    return turn @ base


def upright(vertices, rotation):
    """(vertices rotated, centred on their bounding box, largest side 2 * HALF_EXTENT; scale, offset)
    with upright = (source @ rotation.T - offset) * scale."""
    v = np.asarray(vertices, np.float64) @ rotation.T
    low, high = v.min(0), v.max(0)
    offset = (low + high) / 2
    scale = 2 * HALF_EXTENT / (high - low).max()
    return (v - offset) * scale, scale, offset


def read_igea_ply(data):
    """igea.ply is a binary PLY of triangle strips (-1 restarts), which trimesh does not read."""
    head_end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:head_end].decode("ascii").split("\n")
    count = int([line for line in header if line.startswith("element vertex")][0].split()[2])
    if "element tristrips 1" not in header or header.count("property float x") != 1:
        raise ValueError("unexpected igea.ply layout")
    vertices = np.frombuffer(data, "<f4", count * 3, head_end).reshape(-1, 3).astype(np.float64)
    offset = head_end + count * 12
    n = int(np.frombuffer(data, "<i4", 1, offset)[0])
    strip = np.frombuffer(data, "<i4", n, offset + 4).astype(np.int64)
    restart = strip < 0
    start = np.maximum.accumulate(np.where(restart, np.arange(n) + 1, 0))
    i = np.arange(n - 2)
    ok = ~(restart[i] | restart[i + 1] | restart[i + 2])
    odd = ((i - start[i]) % 2).astype(bool)       # every other strip triangle flips its winding
    a, b, c = strip[i], strip[i + 1], strip[i + 2]
    faces = np.stack([a, np.where(odd, c, b), np.where(odd, b, c)], 1)[ok]
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    return vertices, faces


def mirror_file(mirror, path):
    """Bytes of data/<path> from a checkout or a bare git mirror."""
    plain = os.path.join(mirror, "data", path)
    if os.path.isfile(plain):
        with open(plain, "rb") as handle:
            return handle.read()
    return subprocess.run(["git", "--git-dir", mirror, "show", "HEAD:data/" + path], check=True,
                          capture_output=True).stdout


def load_source(mirror, source):
    """(vertices, faces) of a model file in the mirror."""
    path, _, member = source.partition(":")
    data = mirror_file(mirror, path)
    if member:
        data = zipfile.ZipFile(io.BytesIO(data)).read(member)
        path = member
    if os.path.basename(path) == "igea.ply":
        return read_igea_ply(data)
    mesh = trimesh.load(io.BytesIO(data), file_type=path.rsplit(".", 1)[1], force="mesh", process=False)
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def sdf_mesh(sdf, resolution=176, bound=1.25, max_faces=40000):
    """Marching cubes of one of bench/fg_objects.py's signed distances (source frame, Y up), decimated
    to at most max_faces."""
    import torch
    from skimage import measure
    axis = np.linspace(-bound, bound, resolution)
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        values = torch.cat([sdf(torch.as_tensor(chunk, dtype=torch.float32))
                            for chunk in np.array_split(grid, 16)]).numpy()
    vertices, faces = measure.marching_cubes(values.reshape((resolution,) * 3), 0.0)[:2]
    vertices = vertices * (axis[1] - axis[0]) - bound
    vertices, faces = mesh_ops.decimate(vertices, faces, max_faces, require_closed=True)  # outward-facing
    return vertices, faces


def sdf_normals(sdf, points, h=1e-3):
    """Unit gradients of a signed distance at points: smooth shading where marching cubes facets."""
    import torch
    p = torch.as_tensor(points, dtype=torch.float32)
    with torch.no_grad():
        grad = torch.stack([sdf(p + torch.tensor(e) * h) - sdf(p - torch.tensor(e) * h)
                            for e in ([1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0])], 1).numpy().astype(np.float64)
    return grad / np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-12)


# --- materials and backdrops ----------------------------------------------------------------------

PLAIN = [(0.93, 0.92, 0.88), (0.78, 0.45, 0.30), (0.62, 0.62, 0.64), (0.85, 0.15, 0.12), (0.15, 0.35, 0.75),
         (0.25, 0.55, 0.30), (0.92, 0.75, 0.20), (0.30, 0.30, 0.32), (0.55, 0.38, 0.22), (0.70, 0.60, 0.85),
         (0.95, 0.55, 0.65), (0.35, 0.70, 0.70)]
METALS = [(0.83, 0.66, 0.26), (0.80, 0.80, 0.82), (0.72, 0.42, 0.28)]


def _waves(rng, count, frequency):
    return rng.normal(size=(count, 3)) * frequency, rng.uniform(0, 2 * math.pi, count)


def random_material(rng):
    """A plausible random surface: dict(colour=fn(points (N, 3) upright) -> (N, 3), kind, specular,
    shininess, metallic). Textures are solid (3D) so every view sees the same surface."""
    kind = str(rng.choice(["plain", "plain", "glossy", "metal", "wood", "stone", "speckle", "stripes"]))
    base = np.array(PLAIN[rng.integers(len(PLAIN))])
    other = np.array(PLAIN[rng.integers(len(PLAIN))])
    specular, shininess, metallic = float(rng.uniform(0.1, 0.3)), float(rng.uniform(15, 40)), 0.0
    colour = None
    if kind == "glossy":
        specular, shininess = float(rng.uniform(0.5, 0.8)), float(rng.uniform(50, 90))
    elif kind == "metal":
        base = np.array(METALS[rng.integers(len(METALS))])
        specular, shininess, metallic = float(rng.uniform(0.7, 1.0)), float(rng.uniform(30, 70)), 0.8
    elif kind == "wood":
        base = np.array([0.55, 0.36, 0.2]) * rng.uniform(0.8, 1.2)
        axis = rng.normal(size=3)
        axis /= np.linalg.norm(axis)
        k, phase = _waves(rng, 4, 3.0)
        freq = rng.uniform(25, 45)

        def colour(p):
            r = np.linalg.norm(p - (p @ axis)[:, None] * axis, axis=1) + 0.05 * np.sin(p @ k.T + phase).sum(1)
            ring = 0.5 + 0.5 * np.sin(r * freq)
            return base * (0.75 + 0.3 * ring[:, None])
    elif kind == "stone":
        k, phase = _waves(rng, 16, 8.0)
        amp = rng.uniform(0.12, 0.22)

        def colour(p):
            v = np.sin(p @ k.T + phase).mean(1, keepdims=True)
            return base + amp * v * np.array([1.0, 0.9, 0.8])
    elif kind == "speckle":
        k, phase = _waves(rng, 8, 30.0)

        def colour(p):
            v = np.sin(p @ k.T + phase).mean(1)
            return np.where((v > 0.45)[:, None], base * 0.3, base)
    elif kind == "stripes":
        axis = AXES[str(rng.choice(["+x", "+y", "+z"]))]
        freq = rng.uniform(8, 20)

        def colour(p):
            s = (np.sin(p @ np.array(axis, float) * freq) > 0)[:, None]
            return np.where(s, base, other)
    if colour is None:
        def colour(p):
            return np.broadcast_to(base, (len(p), 3))
    return {"colour": colour, "kind": kind, "specular": specular, "shininess": shininess, "metallic": metallic}


def random_backdrop(rng):
    """An off-white (most dev cases) or pastel backdrop colour, 0..255."""
    if rng.random() < 0.55:
        return np.clip(rng.uniform(238, 250) + rng.normal(0, 2, 3), 0, 255)
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.15, 0.45), rng.uniform(0.72, 0.9))
    return np.array([r, g, b]) * 255


def on_backdrop(rgba, colour, rng, noise=1.0):
    """RGB image: the RGBA render over a plain backdrop with a little sensor-like noise, as input_bg."""
    alpha = rgba[..., 3:].astype(np.float64) / 255
    backdrop = np.broadcast_to(colour, rgba.shape[:2] + (3,)) + rng.normal(0, noise, rgba.shape[:2] + (3,))
    out = rgba[..., :3] * alpha + backdrop * (1 - alpha)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# --- the case -------------------------------------------------------------------------------------

def f32(x):
    return float(np.float32(x))


def camera_json(elevation_deg):
    """camera.json in the dev set's layout (same keys and conventions)."""
    e = math.radians(elevation_deg)

    def position(azimuth_deg):
        a = math.radians(azimuth_deg)
        return [f32(DISTANCE * math.cos(e) * math.sin(a)) + 0.0, f32(DISTANCE * math.sin(e)),
                f32(DISTANCE * math.cos(e) * math.cos(a)) + 0.0]

    views = {name: {"file": file, "azimuth_deg": azimuth, "position": position(azimuth), "look_at": [0, 0, 0],
                    "up": [0, 1, 0]} for name, file, azimuth in VIEWS}
    return {"type": "orthographic", "ortho_scale": f32(ORTHO_SCALE), "position": views["front"]["position"],
            "look_at": [0, 0, 0], "up": [0, 1, 0], "elevation_deg": elevation_deg, "resolution": [SIZE, SIZE],
            "note": "glTF axes: Y up; the object's front faces +Z; orthographic view of width/height ortho_scale",
            "views": views}


def shading_normals(vertices, faces, crease_deg=40.0):
    """(vertices, faces, normals) with vertices split along creases sharper than crease_deg, so CAD
    parts keep their edges and scans shade smoothly."""
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    shaded = trimesh.graph.smooth_shade(mesh, angle=math.radians(crease_deg), facet_minarea=None)
    return np.asarray(shaded.vertices), np.asarray(shaded.faces), np.asarray(shaded.vertex_normals)


def build_case(out_dir, vertices, faces, material, elevation_deg, backdrop, rng, supersample=2, normals=None):
    """Write one case from an upright mesh (glTF axes, already normalised) and its material; `normals`
    (per vertex) shade it when given, else the mesh's own, split at creases."""
    os.makedirs(out_dir, exist_ok=True)
    trimesh.Trimesh(vertices, faces, process=False).export(os.path.join(out_dir, "gt.glb"))
    with open(os.path.join(out_dir, "camera.json"), "w") as handle:
        json.dump(camera_json(elevation_deg), handle, indent=2)
    sv, sf, sn = shading_normals(vertices, faces) if normals is None else (vertices, faces, normals)
    for name, file, azimuth in VIEWS:
        rgba = mesh_render.render(sv, sf, sn, material["colour"], azimuth, elevation_deg, SIZE, ORTHO_SCALE,
                                  supersample, material["specular"], material["shininess"], material["metallic"])
        Image.fromarray(rgba, "RGBA").save(os.path.join(out_dir, file))
        if name == "front":
            Image.fromarray(on_backdrop(rgba, backdrop, rng), "RGB").save(os.path.join(out_dir, "input_bg.png"))


def model_rng(name, seed):
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def draw_elevation(rng):
    return int(rng.integers(0, 31))


def prepared(name, mirror):
    """(upright vertices, faces, material or None (draw one), info) for a model of the set."""
    if name.startswith("sdf_"):
        import fg_objects
        sdf, colour, specular, _, azimuth = fg_objects.OBJECTS[name[4:]]
        rotation = orientation("+y", "+z", -azimuth)         # the yaw fg_objects' camera had
        src_v, src_f = sdf_mesh(sdf)
        vertices, scale, offset = upright(src_v, rotation)

        def upright_colour(p):
            import torch
            source = (p / scale + offset) @ rotation             # back to the SDF's own frame
            return colour(torch.as_tensor(source, dtype=torch.float32), None).numpy().astype(np.float64)

        material = {"colour": upright_colour, "kind": "fg_objects", "specular": specular, "shininess": 40.0,
                    "metallic": 0.0, "normals": sdf_normals(sdf, src_v) @ rotation.T}
        info = {"source": "bench/fg_objects.py:" + name[4:], "up": "+y", "front": "+z", "yaw_deg": -azimuth}
        return vertices, src_f, material, info
    source, up, front, yaw = MODELS[name]
    src_v, src_f = load_source(mirror, source)
    mesh = trimesh.Trimesh(src_v, src_f, process=True)           # join split (UV-seam) vertices
    mesh.remove_unreferenced_vertices()
    vertices, _, _ = upright(mesh.vertices, orientation(up, front, yaw))
    info = {"source": "data/" + source, "up": up, "front": front, "yaw_deg": yaw}
    return vertices, np.asarray(mesh.faces, np.int64), None, info


def all_names():
    import fg_objects
    return list(MODELS) + ["sdf_" + name for name in fg_objects.OBJECTS]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirror", required=True, help="common-3d-test-models checkout or bare git mirror")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--supersample", type=int, default=2, help="samples per pixel side (default 2)")
    parser.add_argument("--sheet", action="store_true", help="also write OUT/contact_sheet.png (all views)")
    args = parser.parse_args(argv)
    names = all_names()
    if args.only:
        wanted = args.only.split(",")
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error("unknown cases: %s (known: %s)" % (", ".join(unknown), ", ".join(names)))
        names = wanted
    manifest = {}
    for name in names:
        start = time.time()
        rng = model_rng(name, args.seed)
        elevation = draw_elevation(rng)
        vertices, faces, material, info = prepared(name, args.mirror)
        drawn = random_material(rng)                            # drawn always, so the stream stays fixed
        material = material or drawn
        backdrop = random_backdrop(rng)
        build_case(os.path.join(args.out, name), vertices, faces, material, elevation, backdrop, rng,
                   args.supersample, material.get("normals"))
        info.update(elevation_deg=elevation, material=material["kind"], faces=int(len(faces)),
                    backdrop=[int(round(c)) for c in backdrop], seconds=round(time.time() - start, 2))
        manifest[name] = info
        print("%-16s elev %2d  %-10s %7d faces  %.1fs" % (name, elevation, material["kind"], len(faces),
                                                          time.time() - start), flush=True)
    path = os.path.join(args.out, "manifest.json")
    if os.path.isfile(path) and args.only:                      # a partial rebuild keeps the other cases
        with open(path) as handle:
            earlier = json.load(handle)
        if earlier.get("seed") == args.seed:
            manifest = {**earlier.get("cases", {}), **manifest}
    with open(path, "w") as handle:
        json.dump({"seed": args.seed, "cases": manifest}, handle, indent=2)
    if args.sheet:
        contact_sheet(args.out, sorted(manifest), os.path.join(args.out, "contact_sheet.png"))
    return 0


def contact_sheet(out, names, path, tile=256):
    """One row per case: input.png and the three views over dark grey, to check orientations by eye."""
    from PIL import ImageDraw
    files = [file for _, file, _ in VIEWS]
    sheet = Image.new("RGB", (tile * len(files), tile * len(names)), (40, 40, 40))
    draw = ImageDraw.Draw(sheet)
    for row, name in enumerate(names):
        for col, file in enumerate(files):
            rgba = Image.open(os.path.join(out, name, file)).convert("RGBA")
            backdrop = Image.new("RGBA", rgba.size, (40, 40, 40, 255))
            backdrop.alpha_composite(rgba)
            sheet.paste(backdrop.convert("RGB").resize((tile, tile), Image.LANCZOS), (col * tile, row * tile))
        draw.text((4, row * tile + 4), name, fill=(255, 255, 0))
    sheet.save(path)


if __name__ == "__main__":
    sys.exit(main())
