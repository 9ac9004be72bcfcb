"""Run inside Blender (bpy module): import a GLB with Blender's glTF importer, let Blender compute its
own MikkTSpace tangents, and write every loop's position, UV, tangent and bitangent sign back in glTF
axes and UV convention as JSON.

    python tangents_dump.py GLB OUT.json
"""

import json
import sys

import bpy


def main(glb, out):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    obj = next(o for o in bpy.data.objects if o.type == "MESH")
    mesh = obj.data
    mesh.calc_tangents(uvmap=mesh.uv_layers.active.name)
    world = obj.matrix_world
    rotation = world.to_3x3().normalized()
    uv_data = mesh.uv_layers.active.data
    loops = []
    for loop in mesh.loops:
        co = world @ mesh.vertices[loop.vertex_index].co
        t = rotation @ loop.tangent
        u, v = uv_data[loop.index].uv
        # Blender (x, y, z) -> glTF (x, z, -y); Blender's UV v is up, glTF's down
        loops.append([co.x, co.z, -co.y, u, 1.0 - v, t.x, t.z, -t.y, loop.bitangent_sign])
    with open(out, "w") as handle:
        json.dump({"loops": loops}, handle)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
