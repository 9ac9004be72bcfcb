"""Run in the project venv's Python (bpy module): the add-on's "Texture selected object" core path on
real objects, with the backend run in-process. Prints one JSON report line.

    python texture_existing_check.py IMAGE OUT_DIR
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import bpy  # noqa: E402

from blender_addon import texture_existing as te  # noqa: E402


def rigged_cube(name, keep_uvs):
    bpy.ops.mesh.primitive_cube_add(size=2.0)
    obj = bpy.context.active_object
    obj.name = name
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.subdivide(number_cuts=3)
    bpy.ops.object.mode_set(mode="OBJECT")
    obj.scale = (1.0, 1.5, 1.0)
    if not keep_uvs:
        while obj.data.uv_layers:
            obj.data.uv_layers.remove(obj.data.uv_layers[0])
    top, bottom = obj.vertex_groups.new(name="top"), obj.vertex_groups.new(name="bottom")
    for vertex in obj.data.vertices:
        weight = (vertex.co.z + 1.0) / 2.0
        top.add([vertex.index], weight, "REPLACE")
        bottom.add([vertex.index], 1.0 - weight, "REPLACE")
    return obj


def snapshot(obj):
    mesh = obj.data
    return {"vertices": [tuple(round(c, 7) for c in v.co) for v in mesh.vertices],
            "polygons": [tuple(p.vertices) for p in mesh.polygons],
            "groups": [[(obj.vertex_groups[g.group].name, round(g.weight, 6)) for g in v.groups] for v in mesh.vertices],
            "uv_maps": [layer.name for layer in mesh.uv_layers],
            "uvs": {layer.name: [tuple(round(c, 6) for c in d.uv) for d in layer.data] for layer in mesh.uv_layers}}


def main(image, out_root):
    from backend_local.pipeline import Pipeline
    from shared.request import parse_request

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    camera_data = bpy.data.cameras.new("cam")
    camera_data.type = "ORTHO"
    camera_data.ortho_scale = 4.0
    camera = bpy.data.objects.new("cam", camera_data)
    scene.collection.objects.link(camera)
    camera.location = (0.0, -8.0, 0.0)
    camera.rotation_euler = (1.5707963, 0.0, 0.0)     # Blender's front view: looking along +Y
    scene.camera = camera
    pipeline = Pipeline("cpu")
    report = {}
    for name, keep_uvs in (("with_uvs", True), ("without_uvs", False)):
        obj = rigged_cube(name, keep_uvs)
        bpy.context.view_layer.update()
        before = snapshot(obj)
        objects_before = sorted(o.name for o in bpy.data.objects)
        fields, uv_name = te.prepare(bpy.context, obj, os.path.join(out_root, name + "_in"))
        out = os.path.join(out_root, name)
        manifest = pipeline.run(parse_request(dict(fields, image_path=image, texture_size=256)), out)
        material = te.apply_result(obj, out, uv_name)
        after = snapshot(obj)
        uv_node = material.node_tree.nodes[te.UV_NODE_NAME]
        linked = sorted(link.to_node.name for link in material.node_tree.links if link.from_node == uv_node)
        report[name] = {
            "same_vertices": before["vertices"] == after["vertices"],
            "same_polygons": before["polygons"] == after["polygons"],
            "same_groups": before["groups"] == after["groups"],
            "group_names": [g.name for g in obj.vertex_groups],
            "weighted_vertices": sum(1 for v in obj.data.vertices if len(v.groups) == 2),
            "no_new_object": sorted(o.name for o in bpy.data.objects) == objects_before,
            "uv_maps_before": before["uv_maps"], "uv_maps_after": after["uv_maps"],
            "old_uvs_kept": all(before["uvs"][k] == after["uvs"][k] for k in before["uvs"]),
            "uv_used": uv_node.uv_map, "exported_uv": uv_name, "image_nodes_on_uv": len(linked),
            "materials": [m.name for m in obj.data.materials],
            "given": manifest["mesh"]["given"],
            "mesh_view": fields.get("mesh_view"),
            "new_uv_in_range": (all(0.0 <= c <= 1.0 for d in obj.data.uv_layers[uv_node.uv_map].data for c in d.uv)),
            "apply_undo": "UNDO" in te.GEN3D_OT_apply_texture.bl_options,
        }
    print("REPORT " + json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
