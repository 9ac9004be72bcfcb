""""Texture selected object": paint the active mesh object from the chosen image, keeping the object.

The object's base mesh (not the evaluated one, so a rig's deformation is not baked in) goes to the
backend as an OBJ in the object's own frame: vertices in mesh order, its loop triangles in order, UVs
per corner from its active UV map. The camera is the scene's active camera, else the current viewport
view, sent as mesh_view's view_matrix (camera <- object). When the result is back, a new material is
put into the object's material slots and, when the backend made new UVs (the object had none, or its
UVs overlap), they go into a new UV map filled per loop from the result's faces, which are the OBJ's
triangles in order; existing UV maps are never replaced. The geometry itself is not touched, so
vertex groups, shape keys and modifiers stay as they were. All of it in one undo step.
"""

import json
import math
import os
import re
import sys
from array import array

import bpy
from bpy.props import StringProperty

from . import images, session
from .contract import Gen3DError, errors, request as contract_request
from .material import build_material, map_paths
from .prefs import backend_settings, get_prefs, import_settings
from .props import request_fields

MESH_FILE_NAME = "texture_target.obj"
NEW_UV_NAME = "Gen3D_UV"
UV_NODE_NAME = "Gen3D UV Map"


def _affine_rows(matrix):
    rows = [[float(matrix[r][c]) for c in range(4)] for r in range(3)]
    return rows + [[0.0, 0.0, 0.0, 1.0]]     # affine by construction; drop float noise in the last row


def mesh_view_for(context, obj):
    """mesh_view for `obj`: the scene camera when there is one, else the viewport's view, else None
    (the backend's fitted front view)."""
    camera = context.scene.camera
    if camera is not None and camera.type == "CAMERA":
        view = _affine_rows(camera.matrix_world.inverted() @ obj.matrix_world)
        if camera.data.type == "ORTHO":
            return {"view_matrix": view, "projection": "ortho", "ortho_scale": float(camera.data.ortho_scale)}
        return {"view_matrix": view, "projection": "persp",
                "fov_deg": min(170.0, max(1.0, math.degrees(camera.data.angle)))}
    region = getattr(context, "region_data", None)
    if region is not None and hasattr(region, "view_matrix"):
        view = _affine_rows(region.view_matrix @ obj.matrix_world)
        if region.is_perspective:
            lens = getattr(getattr(context, "space_data", None), "lens", 50.0) or 50.0
            return {"view_matrix": view, "projection": "persp",
                    "fov_deg": min(170.0, max(1.0, math.degrees(2 * math.atan(36.0 / lens))))}
        return {"view_matrix": view, "projection": "ortho"}
    return None


def write_obj(obj, path):
    """The object's base mesh as an OBJ (object frame); returns the UV map written, "" when none."""
    mesh = obj.data
    mesh.calc_loop_triangles()
    uv_layer = mesh.uv_layers.active
    with open(path, "w", encoding="ascii") as handle:
        handle.write("# Gen3D: %s\n" % obj.name)
        handle.writelines("v %r %r %r\n" % tuple(vertex.co) for vertex in mesh.vertices)
        if uv_layer is not None:
            data = uv_layer.data
            handle.writelines("vt %r %r\n" % tuple(data[loop].uv) for tri in mesh.loop_triangles for loop in tri.loops)
            handle.writelines("f %d/%d %d/%d %d/%d\n" % (tri.vertices[0] + 1, 3 * k + 1, tri.vertices[1] + 1, 3 * k + 2,
                                                         tri.vertices[2] + 1, 3 * k + 3)
                              for k, tri in enumerate(mesh.loop_triangles))
        else:
            handle.writelines("f %d %d %d\n" % tuple(v + 1 for v in tri.vertices) for tri in mesh.loop_triangles)
    return uv_layer.name if uv_layer is not None else ""


def check_target(obj):
    if obj is None or obj.type != "MESH":
        raise Gen3DError(errors.INVALID_INPUT, "Select a mesh object (make it active) to texture it.",
                         stage="queued", retryable=False)
    if not obj.data.polygons:
        raise Gen3DError(errors.INVALID_INPUT, "%s has no faces to paint." % obj.name, stage="queued",
                         retryable=False)


def prepare(context, obj, folder):
    """Write the target mesh into `folder`; returns (request fields for the mesh, the UV map used)."""
    check_target(obj)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, MESH_FILE_NAME)
    uv_name = write_obj(obj, path)
    fields = {"mesh_path": path}
    view = mesh_view_for(context, obj)
    if view is not None:
        fields["mesh_view"] = view
    return fields, uv_name


# -- reading the result's UVs (pure Python: the add-on has no numpy guarantee) ---------------------

_COMPONENT = {5125: "I", 5123: "H", 5121: "B", 5126: "f"}
_WIDTH = {"SCALAR": 1, "VEC2": 2}


def read_result_uvs(glb_path):
    """(faces as flat corner indices, TEXCOORD_0 as flat u, v pairs) of a result GLB."""
    with open(glb_path, "rb") as handle:
        data = handle.read()
    document, blob = contract_request.glb_chunks(data)
    primitive = document["meshes"][0]["primitives"][0]

    def accessor(index):
        acc = document["accessors"][index]
        view = document["bufferViews"][acc["bufferView"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        values = array(_COMPONENT[acc["componentType"]])
        width = _WIDTH[acc["type"]]
        values.frombytes(blob[start:start + values.itemsize * width * acc["count"]])
        if sys.byteorder != "little":
            values.byteswap()
        return values

    return accessor(primitive["indices"]), accessor(primitive["attributes"]["TEXCOORD_0"])


def _unique_uv_name(mesh):
    names = {layer.name for layer in mesh.uv_layers}
    name, number = NEW_UV_NAME, 1
    while name in names:
        number += 1
        name = "%s.%03d" % (NEW_UV_NAME, number)
    return name


def add_result_uvs(obj, glb_path):
    """A new UV map on `obj` from the result's UVs: result face k is loop triangle k of the mesh the
    add-on sent (same order), corner for corner. Returns its name."""
    mesh = obj.data
    mesh.calc_loop_triangles()
    corners, uvs = read_result_uvs(glb_path)
    if len(corners) != 3 * len(mesh.loop_triangles):
        raise Gen3DError(errors.INVALID_INPUT, "The result has %d triangles but %s has %d; the object changed while "
                         "it was being textured. Texture it again." % (len(corners) // 3, obj.name,
                                                                       len(mesh.loop_triangles)), retryable=False)
    active = mesh.uv_layers.active
    layer = mesh.uv_layers.new(name=_unique_uv_name(mesh), do_init=False)
    if layer is None:
        raise Gen3DError(errors.INVALID_INPUT, "%s already has the most UV maps Blender allows (8); remove one and "
                         "texture it again." % obj.name, retryable=False)
    name = layer.name
    if active is not None:
        mesh.uv_layers.active = mesh.uv_layers[active.name]   # keep the artist's active map
    flat = [0.0] * (2 * len(mesh.loops))
    for k, tri in enumerate(mesh.loop_triangles):
        for c, loop in enumerate(tri.loops):
            vertex = corners[3 * k + c]
            flat[2 * loop] = uvs[2 * vertex]
            flat[2 * loop + 1] = 1.0 - uvs[2 * vertex + 1]     # glTF's v points down, Blender's up
    mesh.uv_layers[name].data.foreach_set("uv", flat)
    return name


def _use_uv_map(material, uv_name):
    """Every image node of the material reads `uv_name` (not whichever map happens to render)."""
    nodes, links = material.node_tree.nodes, material.node_tree.links
    node = nodes.new("ShaderNodeUVMap")
    node.name = node.label = UV_NODE_NAME
    node.uv_map = uv_name
    node.location = (-1100, 300)
    for image_node in [n for n in nodes if n.type == "TEX_IMAGE"]:
        links.new(node.outputs["UV"], image_node.inputs["Vector"])


def apply_result(obj, folder, uv_name, options=None):
    """Put the result in `folder` onto `obj`: its material into every slot (one slot added when it has
    none), on `uv_name` when the backend kept the object's UVs, else on a new UV map. Returns the
    material."""
    with open(os.path.join(folder, "meta.json")) as handle:
        manifest = json.load(handle)
    given = (manifest.get("mesh") or {}).get("given") or {}
    if given.get("faces") != _triangle_count(obj):
        raise Gen3DError(errors.INVALID_INPUT, "This result was made for another mesh than %s." % obj.name,
                         retryable=False)
    maps = map_paths(folder, manifest)
    if not maps:
        raise Gen3DError(errors.INVALID_INPUT, "The result in %s has no texture maps to put on %s." % (folder, obj.name),
                         retryable=False)
    if given.get("uvs") != "given" or not uv_name or uv_name not in obj.data.uv_layers:
        uv_name = add_result_uvs(obj, os.path.join(folder, manifest["mesh"].get("file", "mesh.glb")))
    material = build_material("%s_gen3d" % obj.name, maps, uv_map=uv_name,
                              ao_into_base_color=bool(getattr(options, "ao_into_base_color", False)))
    _use_uv_map(material, uv_name)
    slots = obj.data.materials
    if len(slots) == 0:
        slots.append(material)
    else:
        for index in range(len(slots)):
            slots[index] = material
    return material


def _triangle_count(obj):
    obj.data.calc_loop_triangles()
    return len(obj.data.loop_triangles)


def _fail(operator, context, text):
    session.show_message(context.scene, text, error=True)
    operator.report({"ERROR"}, text)
    return {"CANCELLED"}


class GEN3D_OT_texture_selected(bpy.types.Operator):
    """Paint the active mesh object from the chosen image, keeping its geometry and UVs"""

    bl_idname = "gen3d.texture_selected"
    bl_label = "Texture Selected Object"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "MESH"

    def execute(self, context):
        props = context.scene.gen3d
        prefs = get_prefs(context)
        settings = backend_settings(prefs)
        obj = context.active_object
        try:
            path, name = images.chosen_source(props, settings.output_dir)
            safe = re.sub(r"[^\w.-]+", "_", obj.name) or "object"      # object names may hold / or :
            folder = os.path.join(settings.output_dir or bpy.app.tempdir, "texture_inputs", safe)
            fields, uv_name = prepare(context, obj, folder)
            fields = dict(request_fields(props), texture=True, **fields)
            job = session.submit(context, obj.name, path, fields, settings, import_settings(prefs))
        except Exception as exc:      # expected errors and bugs alike (a bug: traceback on the console)
            return _fail(self, context, session.start_failure_text(exc))
        # the finished job is applied to this object (session hands it to gen3d.apply_texture)
        job.data.update(texture_target=obj.name, texture_uv=uv_name)
        session.show_message(context.scene, "Texturing %s from %s." % (obj.name, name))
        session.sync_job(job)
        return {"FINISHED"}


class GEN3D_OT_apply_texture(bpy.types.Operator):
    """Put a finished Gen3D texture result onto the object it was made for (one undo step)"""

    bl_idname = "gen3d.apply_texture"
    bl_label = "Apply Gen3D Texture"
    bl_options = {"REGISTER", "UNDO", "INTERNAL"}

    job_id: StringProperty(options={"SKIP_SAVE"})

    def execute(self, context):
        job = session.manager.jobs.get(self.job_id) if session.manager else None
        if job is None:
            return _fail(self, context, "Gen3D: that texture job is gone.")
        obj = bpy.data.objects.get(job.data.get("texture_target", ""))
        if obj is None or obj.type != "MESH":
            return _fail(self, context, "Gen3D: the object %s is gone; its texture is in %s."
                         % (job.data.get("texture_target"), job.job_dir))
        try:
            material = apply_result(obj, job.job_dir, job.data.get("texture_uv", ""), job.data.get("import_options"))
        except (Gen3DError, OSError, ValueError, KeyError) as exc:
            return _fail(self, context, "Gen3D: %s" % session.error_text(exc))
        job.data["object_name"] = obj.name
        session.sync_job(job)
        session.show_message(context.scene, "Textured %s." % obj.name)
        self.report({"INFO"}, "Gen3D: %s now uses %s" % (obj.name, material.name))
        return {"FINISHED"}


classes = (GEN3D_OT_texture_selected, GEN3D_OT_apply_texture)
