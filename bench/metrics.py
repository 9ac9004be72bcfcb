"""Shape scoring exactly as DESIGN.md "Test data" defines it.

Upright frame (the default): the ground truth is turned about the vertical axis by the front
camera's azimuth only (no tilt, so a result that leans scores lower), both meshes are centred on
their bounding boxes and scaled so their largest side is 1. The older camera frame (`frame="camera"`,
kept to compare with results and figures from before the upright frame) rotates the ground truth by
the camera's full view rotation instead.
"""

import json

import numpy as np
import trimesh
from PIL import Image, ImageDraw
from scipy.spatial import cKDTree

SAMPLES = 30000
SILHOUETTE_RES = 256


def view_rotation(camera):
    """World -> camera rotation (rows: camera right, up, backward), the camera looking down -Z."""
    position = np.asarray(camera["position"], dtype=np.float64)
    target = np.asarray(camera.get("look_at", [0, 0, 0]), dtype=np.float64)
    up = np.asarray(camera.get("up", [0, 1, 0]), dtype=np.float64)
    backward = position - target
    backward /= np.linalg.norm(backward)
    right = np.cross(up, backward)
    right /= np.linalg.norm(right)
    true_up = np.cross(backward, right)
    return np.stack([right, true_up, backward])


def front_azimuth_deg(camera):
    """The front camera's azimuth about the vertical axis (0 = looking from +Z toward the origin)."""
    front = (camera.get("views") or {}).get("front") or {}
    if "azimuth_deg" in front:
        return float(front["azimuth_deg"])
    position = np.asarray(camera["position"], dtype=np.float64) - np.asarray(camera.get("look_at", [0, 0, 0]))
    return float(np.degrees(np.arctan2(position[0], position[2])))


def azimuth_rotation(azimuth_deg):
    """Rotation about +Y taking the direction toward a camera at `azimuth_deg` to +Z."""
    a = np.radians(-azimuth_deg)
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def gt_rotation(camera, frame="upright"):
    if frame == "camera":
        return view_rotation(camera)
    if frame != "upright":
        raise ValueError("frame is 'upright' or 'camera', not %r" % frame)
    return azimuth_rotation(front_azimuth_deg(camera))


def load_mesh(path):
    mesh = trimesh.load(path, force="mesh", process=False)
    return trimesh.Trimesh(np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces), process=False)


def normalized(mesh, rotation=None):
    """Copy of `mesh` rotated (optional), centred on its bounding box, largest side 1."""
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    if rotation is not None:
        vertices = vertices @ rotation.T
    low, high = vertices.min(0), vertices.max(0)
    vertices = (vertices - (low + high) / 2) / max((high - low).max(), 1e-12)
    return trimesh.Trimesh(vertices, mesh.faces, process=False)


def surface_samples(mesh, count=SAMPLES, seed=0):
    points, _ = trimesh.sample.sample_surface(mesh, count, seed=seed)
    return points


def silhouette(mesh, axes, res=SILHOUETTE_RES):
    """Binary silhouette of the mesh projected on two axes (in the normalized [-0.5, 0.5] frame)."""
    xy = mesh.vertices[:, axes]
    pixels = (xy[:, 0] + 0.5) * (res - 1), (0.5 - xy[:, 1]) * (res - 1)
    pixels = np.stack(pixels, 1)
    canvas = Image.new("L", (res, res), 0)
    draw = ImageDraw.Draw(canvas)
    for tri in pixels[mesh.faces]:
        draw.polygon([tuple(p) for p in tri], fill=1)
    return np.asarray(canvas, dtype=bool)


def iou(a, b):
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def score(pred, gt):
    """Metrics between two already normalized meshes."""
    p, g = surface_samples(pred, seed=1), surface_samples(gt, seed=2)
    d_pg = cKDTree(g).query(p)[0]
    d_gp = cKDTree(p).query(g)[0]
    result = {"chamfer_l1": float((d_pg.mean() + d_gp.mean()) / 2)}
    for tau in (0.02, 0.05):
        precision, recall = (d_pg < tau).mean(), (d_gp < tau).mean()
        f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        result["f@%g" % tau] = float(f)
    # Front: seen from +Z (x right, y up). Side: from +X (the front camera's right), looking back
    # along -X, so the image's horizontal axis is -Z.
    result["iou_front"] = iou(silhouette(pred, [0, 1]), silhouette(gt, [0, 1]))
    flip = np.diag([1.0, 1.0, -1.0])
    side_pred = trimesh.Trimesh(pred.vertices @ flip, pred.faces, process=False)
    side_gt = trimesh.Trimesh(gt.vertices @ flip, gt.faces, process=False)
    result["iou_side"] = iou(silhouette(side_pred, [2, 1]), silhouette(side_gt, [2, 1]))
    return result


def score_case(pred_path, gt_path, camera_path, frame="upright"):
    with open(camera_path) as handle:
        camera = json.load(handle)
    gt = normalized(load_mesh(gt_path), gt_rotation(camera, frame))
    pred = normalized(load_mesh(pred_path))
    return score(pred, gt)
