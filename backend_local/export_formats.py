"""The extra mesh formats a request can ask for besides the GLB (request field `formats`).

Both hold the GLB's very mesh: the same vertices in the same order, the same faces, normals and UVs,
in the same upright frame (glTF axes: Y up, front +Z, base on y = 0). Blender's OBJ importer reads
that frame by default (up Y, forward -Z); for PLY, set its importer's Up to Y and Forward to -Z.

- OBJ (trimesh's writer) with an MTL that names the result's PNG maps, using the PBR extension
  to MTL: map_Kd albedo, map_Pr roughness, map_Pm metallic, norm normal. The normal map is also
  given as map_Bump because Blender's OBJ importer (4.5) reads normal maps only from there (and its
  exporter writes them there); AO has no MTL keyword.
- PLY (trimesh's writer, binary) with vertex colours: the albedo sampled at each vertex's UV,
  bilinearly, as a glTF viewer samples the texture there; the UVs go along as s, t.
"""

import os

import cv2
import numpy as np
import trimesh
from trimesh.exchange.obj import export_obj
from trimesh.exchange.ply import export_ply

from shared.manifest import FORMAT_FILES, map_file

OBJ_FILE, MTL_FILE = FORMAT_FILES["obj"]
PLY_FILE = FORMAT_FILES["ply"][0]
# The GLB's untextured material (export.write_glb): the same grey, roughness and metalness.
UNTEXTURED = {"color": 0.8, "roughness": 0.6, "metallic": 0.0}


def opengl_uvs(uvs):
    """glTF UVs (v down from the image's top) -> OBJ/PLY UVs (v up from its bottom)."""
    uvs = np.asarray(uvs, dtype=np.float64)
    return np.column_stack([uvs[:, 0], 1.0 - uvs[:, 1]])


def sample_albedo(albedo, uvs):
    """uint8 RGB(A) albedo and glTF UVs -> uint8 RGBA per vertex, bilinear with clamped edges (glTF's
    CLAMP_TO_EDGE sampler; texel centres at (i + 0.5) / size)."""
    height, width = albedo.shape[:2]
    uvs = np.asarray(uvs, dtype=np.float32)
    map_x = (uvs[:, 0] * width - 0.5).reshape(1, -1)
    map_y = (uvs[:, 1] * height - 0.5).reshape(1, -1)
    rgb = np.ascontiguousarray(albedo[..., :3])
    colours = cv2.remap(rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]
    return np.column_stack([colours, np.full(len(colours), 255, np.uint8)])


def _mtl_text(material, textured):
    lines = ["# Gen3D: PBR maps for Blender's OBJ importer and other readers of the MTL PBR extension",
             "newmtl %s" % material]
    if textured:
        # Kd, Pr and Pm multiply their maps, as the GLB's factors of 1 do.
        lines += ["Kd 1.000000 1.000000 1.000000", "Ks 0.500000 0.500000 0.500000", "Pr 1.000000",
                  "Pm 1.000000", "illum 2", "map_Kd %s" % map_file("albedo"), "map_Pr %s" % map_file("roughness"),
                  "map_Pm %s" % map_file("metallic"), "norm %s" % map_file("normal"),
                  "map_Bump -bm 1.000000 %s" % map_file("normal")]
    else:
        grey = UNTEXTURED["color"]
        lines += ["Kd %.6f %.6f %.6f" % (grey, grey, grey), "Ks 0.500000 0.500000 0.500000",
                  "Pr %.6f" % UNTEXTURED["roughness"], "Pm %.6f" % UNTEXTURED["metallic"], "illum 2"]
    return "\n".join(lines) + "\n"


def write_obj(directory, vertices, faces, normals, uvs=None, name="Gen3D"):
    """mesh.obj + mesh.mtl. With UVs the MTL references the result's PNG maps (already in `directory`)."""
    material = name + "_material"
    visual = trimesh.visual.TextureVisuals(uv=opengl_uvs(uvs)) if uvs is not None else None
    mesh = trimesh.Trimesh(vertices, faces, vertex_normals=normals, visual=visual, process=False)
    mesh.metadata["name"] = name
    if visual is not None:
        visual.material.name = material
    # digits=9: float32 positions and UVs round-trip exactly enough for importers (< 1e-8).
    text = export_obj(mesh, include_normals=True, include_color=False, include_texture=uvs is not None,
                      write_texture=False, digits=9, mtl_name=MTL_FILE, header="Gen3D")
    if uvs is None:   # trimesh links a material only with UVs; the untextured grey still gets its MTL
        text = "mtllib %s\nusemtl %s\n%s" % (MTL_FILE, material, text)
    with open(os.path.join(directory, OBJ_FILE), "w", encoding="utf-8") as handle:
        handle.write(text)
    with open(os.path.join(directory, MTL_FILE), "w", encoding="utf-8") as handle:
        handle.write(_mtl_text(material, uvs is not None))


def write_ply(directory, vertices, faces, normals, uvs=None, albedo=None):
    """mesh.ply (binary): positions, normals, and with a texture the albedo per vertex plus s, t."""
    colours = sample_albedo(albedo, uvs) if albedo is not None and uvs is not None else None
    mesh = trimesh.Trimesh(vertices, faces, vertex_normals=normals, vertex_colors=colours, process=False)
    if uvs is not None:
        flipped = opengl_uvs(uvs).astype(np.float32)
        mesh.vertex_attributes["s"], mesh.vertex_attributes["t"] = flipped[:, 0], flipped[:, 1]
    with open(os.path.join(directory, PLY_FILE), "wb") as handle:
        handle.write(export_ply(mesh, encoding="binary", vertex_normal=True, include_attributes=True))


def write_formats(directory, formats, vertices, faces, normals, uvs=None, albedo=None, name="Gen3D"):
    """Write every extra format in `formats` (the GLB is written by export.write_glb)."""
    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    normals = np.asarray(normals, dtype=np.float64)
    normals = (normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-20)).astype(np.float32)
    if "obj" in formats:
        write_obj(directory, vertices, faces, normals, uvs, name=name)
    if "ply" in formats:
        write_ply(directory, vertices, faces, normals, uvs, albedo)
