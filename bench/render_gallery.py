"""Render results side by side with Blender (bpy module, Cycles on the CPU): the README picture.

    python bench/render_gallery.py OUT.png RESULT_DIR [RESULT_DIR...] [--angle DEG]

Each result's GLB is imported with Blender's glTF importer (so the picture shows exactly what the
material looks like in Blender), placed in a row, lit by a sun and a grey world, and rendered from
slightly above and to the side. A second row shows the input images.
"""

import argparse
import math
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("results", nargs="+")
    parser.add_argument("--angle", type=float, default=30.0, help="turn each object by this many degrees")
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args(argv)

    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    spacing = 2.6
    count = len(args.results)
    for index, result in enumerate(args.results):
        before = set(bpy.data.objects)
        bpy.ops.import_scene.gltf(filepath=os.path.join(result, "mesh.glb"))
        for obj in set(bpy.data.objects) - before:
            if obj.parent is None:
                obj.location.x += (index - (count - 1) / 2) * spacing
                obj.rotation_mode = "XYZ"          # the glTF importer leaves nodes in quaternion mode
                obj.rotation_euler = (math.radians(12), 0.0, math.radians(args.angle))
        # the input image on a plane below the object
        image = bpy.data.images.load(os.path.join(result, "input.png"))
        material = bpy.data.materials.new("input_%d" % index)
        material.use_nodes = True
        nodes = material.node_tree.nodes
        texture = nodes.new("ShaderNodeTexImage")
        texture.image = image
        emission = nodes.new("ShaderNodeEmission")
        material.node_tree.links.new(texture.outputs["Color"], emission.inputs["Color"])
        mix = nodes.new("ShaderNodeMixShader")
        transparent = nodes.new("ShaderNodeBsdfTransparent")
        material.node_tree.links.new(texture.outputs["Alpha"], mix.inputs[0])
        material.node_tree.links.new(transparent.outputs[0], mix.inputs[1])
        material.node_tree.links.new(emission.outputs[0], mix.inputs[2])
        output = nodes.get("Material Output")
        material.node_tree.links.new(mix.outputs[0], output.inputs["Surface"])
        bpy.ops.mesh.primitive_plane_add(size=2.0, location=((index - (count - 1) / 2) * spacing, -3.0, -2.5),
                                         rotation=(math.radians(90), 0, 0))
        bpy.context.object.data.materials.append(material)

    world = bpy.data.worlds.new("world")
    scene.world = world
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs[0].default_value = (0.18, 0.18, 0.2, 1.0)
    world.node_tree.nodes["Background"].inputs[1].default_value = 1.0
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(50), math.radians(10), math.radians(-35))
    scene.collection.objects.link(sun)

    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = spacing * count + 0.4
    camera.location = (0.0, -12.0, -1.25)
    camera.rotation_euler = (math.radians(90), 0.0, 0.0)
    scene.collection.objects.link(camera)
    scene.camera = camera

    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = args.samples
    scene.render.resolution_x = 360 * count
    scene.render.resolution_y = 800
    scene.render.filepath = os.path.abspath(args.out)
    bpy.ops.render.render(write_still=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
