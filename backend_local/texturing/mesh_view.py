"""Where the input camera stood relative to a given mesh (request `mesh_view`), as the linear map that
takes mesh-frame points into the frame the texturers work in: the camera looking down -Z, the image's
x to the right and y up.

The image is framed (cropped and scaled) before any engine sees it, so the camera's own scale and
position cannot place the mesh on it: only its direction is used, and the projection is fitted to the
image's foreground (base.fit_view). A perspective camera is taken as an orthographic one along its
direction (weak perspective), exact for a distant camera and close for the usual framing of an object.
"""

import math

import numpy as np

from shared.errors import INVALID_INPUT, Gen3DError

from ..upright import upright_to_camera


def _about_y(angle_deg):
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def camera_matrix(mesh_view):
    """3x3 mesh frame -> camera frame. null: the front view (+Z, level); azimuth is measured from +Z
    towards +X (90 = the camera on the +X side), elevation above the horizon (Y up)."""
    if not mesh_view:
        return np.eye(3)
    if "view_matrix" in mesh_view:
        matrix = np.asarray(mesh_view["view_matrix"], dtype=np.float64)[:3, :3]
        if abs(np.linalg.det(matrix)) < 1e-12:
            raise Gen3DError(INVALID_INPUT, "'mesh_view.view_matrix' is singular (it flattens the mesh); send "
                             "the camera's world-to-camera matrix times the object's matrix.", stage="preprocess",
                             retryable=False)
        return matrix
    # turn the camera's azimuth to the front, then take its elevation out as the upright frame does
    return upright_to_camera(mesh_view["elevation_deg"]) @ _about_y(-mesh_view["azimuth_deg"])


def to_camera(vertices, mesh_view):
    """Mesh-frame vertices in the camera frame, centred and scaled to largest side 2 (the frame whose
    units the texturers' tolerances assume). A similarity after the view's linear map, so UVs and
    tangent-space normals baked there belong to the given mesh as well."""
    points = np.asarray(vertices, dtype=np.float64) @ camera_matrix(mesh_view).T
    low, high = points.min(0), points.max(0)
    scale = 2.0 / max(float((high - low).max()), 1e-12)
    return (points - (low + high) / 2.0) * scale


def view_record(mesh_view):
    """meta.json's `view` for a given mesh: the camera's azimuth and elevation in the mesh's frame."""
    matrix = camera_matrix(mesh_view)
    # the camera looks down its -Z: in the mesh frame it stands along the third row of the matrix
    towards = matrix[2] / max(np.linalg.norm(matrix[2]), 1e-12)
    elevation = math.degrees(math.asin(max(-1.0, min(1.0, towards[1]))))
    azimuth = math.degrees(math.atan2(towards[0], towards[2])) if abs(towards[1]) < 1 - 1e-9 else 0.0
    return {"azimuth_deg": round(azimuth, 2), "elevation_deg": round(elevation, 2)}
