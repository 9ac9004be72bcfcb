"""Runs inside Blender 4.5 (the bpy module) for tests/test_formats.py: read result files back with
Blender's own importers and report what they built; the pytest side makes the assertions.

    python formats_readback.py CONFIG.json REPORT.json

CONFIG: {"obj": path?, "ply": path?, "usdz": path?, "blend": path?, "object": name?}; each given file
is imported into an empty scene. "blend" + "object": that object's dimensions, to compare with the USD.
"""

import json
import sys
import traceback

import bpy


def empty_scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)


def mesh_objects():
    return [obj for obj in bpy.data.objects if obj.type == "MESH"]


def image_file(node):
    image = getattr(node, "image", None)
    if image is None:
        return None
    return {"name": image.name, "path": bpy.path.abspath(image.filepath), "size": list(image.size),
            "has_data": bool(image.has_data or image.size[0] > 0)}


def upstream_image(socket, depth=0):
    """The image behind a socket, through Normal Map / Separate Color nodes (what the importers insert)."""
    if not socket.is_linked or depth > 4:
        return None
    node = socket.links[0].from_node
    if node.type == "TEX_IMAGE":
        return dict(image_file(node), via=[])
    for name in ("Color", "Image"):
        if name in node.inputs:
            found = upstream_image(node.inputs[name], depth + 1)
            if found:
                found["via"].insert(0, node.type)
                return found
    return None


def describe_material(material):
    principled = next(node for node in material.node_tree.nodes if node.type == "BSDF_PRINCIPLED")
    return {"name": material.name,
            "linked": {socket.name: upstream_image(socket) for socket in principled.inputs if socket.is_linked},
            "images": sorted(image_file(node)["name"] for node in material.node_tree.nodes
                             if node.type == "TEX_IMAGE" and node.image)}


def describe_mesh(obj):
    mesh = obj.data
    world = obj.matrix_world                # importers put their axis conversion here or in the mesh
    co = [value for vertex in mesh.vertices for value in (world @ vertex.co)]
    report = {"name": obj.name, "vertices": len(mesh.vertices), "faces": len(mesh.polygons),
              "dimensions": list(obj.dimensions), "uv_maps": mesh.uv_layers.keys(), "co": co,
              "materials": [describe_material(m) for m in mesh.materials if m and m.use_nodes],
              "colors": [{"name": a.name, "domain": a.domain, "type": a.data_type}
                         for a in mesh.color_attributes]}
    if mesh.color_attributes:
        attribute = mesh.color_attributes[0]
        values = [0.0] * (len(attribute.data) * 4)
        attribute.data.foreach_get("color", values)
        report["color_values"] = values
    return report


def main(config_path, report_path):
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    report = {"blender": bpy.app.version_string}
    try:
        if config.get("obj"):
            empty_scene()
            assert bpy.ops.wm.obj_import(filepath=config["obj"]) == {"FINISHED"}
            report["obj"] = [describe_mesh(obj) for obj in mesh_objects()]
        if config.get("ply"):
            empty_scene()
            # PLY has no axis convention; ours is the GLB's (Y up, front +Z).
            assert bpy.ops.wm.ply_import(filepath=config["ply"], forward_axis="NEGATIVE_Z", up_axis="Y") == {"FINISHED"}
            report["ply"] = [describe_mesh(obj) for obj in mesh_objects()]
        if config.get("usdz"):
            empty_scene()
            assert bpy.ops.wm.usd_import(filepath=config["usdz"]) == {"FINISHED"}
            report["usdz"] = [describe_mesh(obj) for obj in mesh_objects()]
        if config.get("blend"):
            bpy.ops.wm.open_mainfile(filepath=config["blend"])
            report["blend_object"] = describe_mesh(bpy.data.objects[config["object"]])
    except Exception:
        report["exception"] = traceback.format_exc()
    with open(report_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:3])
