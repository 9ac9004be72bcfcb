"""Run inside Blender (bpy module): import a GLB with Blender's glTF importer, render the world-space
normal that its material's Normal Map node produces (as emission, orthographic, from the front), and
write the per-pixel normals converted back to glTF axes as JSON.

    python normal_map_check.py GLB OUT.json [--flip-green]

--flip-green inverts the normal texture's green channel first (the control case of the test).
"""

import json
import os
import sys
import tempfile

import bpy

RES = 96


def main(glb, out, flip_green):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=glb)
    obj = next(o for o in bpy.data.objects if o.type == "MESH")
    material = obj.active_material
    tree = material.node_tree
    normal_map = next(n for n in tree.nodes if n.type == "NORMAL_MAP")
    image = normal_map.inputs["Color"].links[0].from_node.image
    if flip_green:
        pixels = list(image.pixels)
        pixels[1::4] = [1.0 - g for g in pixels[1::4]]
        image.pixels = pixels
    # emission colour = normal * 0.5 + 0.5 (world space), rendered linearly
    scale = tree.nodes.new("ShaderNodeVectorMath")
    scale.operation = "MULTIPLY_ADD"
    scale.inputs[1].default_value = (0.5, 0.5, 0.5)
    scale.inputs[2].default_value = (0.5, 0.5, 0.5)
    tree.links.new(normal_map.outputs["Normal"], scale.inputs[0])
    emission = tree.nodes.new("ShaderNodeEmission")
    tree.links.new(scale.outputs["Vector"], emission.inputs["Color"])
    output = next(n for n in tree.nodes if n.type == "OUTPUT_MATERIAL")
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])

    scene = bpy.context.scene
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 2.0
    camera.location = (0.0, -5.0, 0.0)              # glTF front (+Z) is Blender's -Y
    camera.rotation_euler = (1.5707963, 0.0, 0.0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 1
    scene.cycles.device = "CPU"
    scene.cycles.pixel_filter_type = "BOX"
    scene.cycles.filter_width = 0.01
    scene.view_settings.view_transform = "Standard"
    scene.render.resolution_x = scene.render.resolution_y = RES
    scene.render.image_settings.file_format = "OPEN_EXR"
    scene.render.image_settings.color_depth = "32"
    path = os.path.join(tempfile.mkdtemp(), "normals.exr")
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)

    rendered = bpy.data.images.load(path)
    values = list(rendered.pixels)
    normals = []
    for row in range(RES):                    # Blender images start at the bottom row
        for col in range(RES):
            index = 4 * ((RES - 1 - row) * RES + col)
            bx, by, bz = (2 * values[index + k] - 1 for k in range(3))
            normals.append([bx, bz, -by])     # Blender (x, y, z) -> glTF (x, z, -y)
    with open(out, "w") as handle:
        json.dump({"resolution": RES, "normals": normals}, handle)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], "--flip-green" in args)
