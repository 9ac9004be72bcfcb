"""The upright output frame (DESIGN.md "Coordinates"), applied to every engine's result at export.

Engines build their mesh where it is convenient for them (the built-in engine: the input camera's
frame, so its texture projection is a plain orthographic one). Before export the pipeline turns the
mesh into the contract's frame: the input camera's elevation taken out (a rotation about X, so an
object photographed from above stands straight), largest side 2, centred in X and Z, resting on
y = 0. The rotation is rigid and applied to vertices and normals alike, so tangent-space normal maps
and UVs stay valid: it can (and does) run after texturing.
"""

import math

import numpy as np

FRAME = "upright"


def camera_to_upright(elevation_deg):
    """3x3 rotation taking camera-frame points (camera looking down -Z from `elevation_deg` above the
    horizon) to the world's upright frame. In the camera frame the world's up is (0, cos e, sin e)
    (its top leans toward the camera); this rotation about X maps it to (0, 1, 0)."""
    e = math.radians(float(elevation_deg))
    c, s = math.cos(e), math.sin(e)
    return np.array([[1.0, 0.0, 0.0],
                     [0.0, c, s],
                     [0.0, -s, c]])


def upright_to_camera(elevation_deg):
    """The inverse rotation: an upright result seen from the input camera (benches re-project with it)."""
    return camera_to_upright(elevation_deg).T


def ground(vertices):
    """Scale to largest side 2, centre on the bounding box in X and Z, base on y = 0."""
    vertices = np.asarray(vertices, dtype=np.float64)
    low, high = vertices.min(0), vertices.max(0)
    scale = 2.0 / max(float((high - low).max()), 1e-12)
    offset = np.array([(low[0] + high[0]) / 2.0, low[1], (low[2] + high[2]) / 2.0])
    return (vertices - offset) * scale


def to_upright(vertices, normals=None, elevation_deg=0.0):
    """(vertices, normals) in the upright frame, grounded. Normals are rotated (not scaled or moved)."""
    rotation = camera_to_upright(elevation_deg)
    vertices = ground(np.asarray(vertices, dtype=np.float64) @ rotation.T)
    if normals is not None:
        normals = np.asarray(normals, dtype=np.float64) @ rotation.T
    return vertices, normals


def view_record(azimuth_deg=0.0, elevation_deg=0.0):
    """meta.json's `view`: the input camera the engine assumed or estimated."""
    return {"azimuth_deg": round(float(azimuth_deg), 2), "elevation_deg": round(float(elevation_deg), 2)}
