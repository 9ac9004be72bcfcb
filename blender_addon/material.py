"""One Principled BSDF material per result, wired from the result's map PNGs.

    albedo (sRGB) ──────────────[× AO, optional]──> Base Color
    metallic (Non-Color) ──────────────────────────> Metallic
    roughness (Non-Color) ─────────────────────────> Roughness
    normal (Non-Color) ──> Normal Map (tangent) ───> Normal
    ao (Non-Color)        kept as an image node; multiplied into Base Color when asked

Socket lookups go by name (Principled BSDF) or identifier (Mix) so that Blender 3.4 to 5.x all work.
"""

import os

import bpy

from .naming import rename

# An image texture node is about 270 px tall when drawn (taller with its preview open): one row per
# map with room between them, so no node overlaps another.
IMAGE_NODE_STEP = 340
IMAGE_COLUMN_X = -760

SRGB = "sRGB"
NON_COLOR = "Non-Color"
MAP_COLORSPACE = {"albedo": SRGB, "normal": NON_COLOR, "roughness": NON_COLOR, "metallic": NON_COLOR,
                  "ao": NON_COLOR}
NODE_NAMES = {"albedo": "Gen3D Albedo", "normal": "Gen3D Normal", "roughness": "Gen3D Roughness",
              "metallic": "Gen3D Metallic", "ao": "Gen3D AO", "normal_map": "Gen3D Normal Map",
              "ao_multiply": "Gen3D AO Multiply"}


def set_colorspace(image, name):
    try:
        image.colorspace_settings.name = name
    except TypeError:  # an OCIO config without that name: fall back to the data flag where it exists
        if name == NON_COLOR and hasattr(image.colorspace_settings, "is_data"):
            image.colorspace_settings.is_data = True
        else:
            raise


def load_map(path, key, prefix):
    image = bpy.data.images.load(path, check_existing=False)
    rename(image, bpy.data.images, "%s_%s" % (prefix, key))
    set_colorspace(image, MAP_COLORSPACE[key])
    if MAP_COLORSPACE[key] == NON_COLOR:
        image.alpha_mode = "NONE"         # data maps carry no alpha
    return image


def socket(sockets, *names, kind=None):
    """The first socket whose identifier or name is one of `names` (and whose type is `kind`)."""
    for wanted in names:
        for candidate in sockets:
            if wanted in (candidate.identifier, candidate.name) and (kind is None or candidate.type == kind):
                return candidate
    raise KeyError("no socket named %s" % " or ".join(names))


def _node_tree(material):
    if material.node_tree is None:        # Blender < 5.0 creates the tree only on use_nodes
        material.use_nodes = True
    return material.node_tree


def _multiply_node(nodes):
    if hasattr(bpy.types, "ShaderNodeMix"):           # 3.4+
        node = nodes.new("ShaderNodeMix")
        node.data_type = "RGBA"
        node.blend_type = "MULTIPLY"
        socket(node.inputs, "Factor_Float", "Factor", kind="VALUE").default_value = 1.0
        return node, socket(node.inputs, "A_Color", kind="RGBA"), socket(node.inputs, "B_Color", kind="RGBA"), \
            socket(node.outputs, "Result_Color", kind="RGBA")
    node = nodes.new("ShaderNodeMixRGB")
    node.blend_type = "MULTIPLY"
    node.inputs["Fac"].default_value = 1.0
    return node, node.inputs["Color1"], node.inputs["Color2"], node.outputs["Color"]


def build_material(name, maps, uv_map="", ao_into_base_color=False):
    """A new material `name`. maps: {"albedo": path, ...}; empty for an untextured result."""
    material = bpy.data.materials.new(name)
    tree = _node_tree(material)
    nodes, links = tree.nodes, tree.links
    nodes.clear()
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (400, 300)
    bsdf = nodes.new("ShaderNodeBsdfPrincipled")
    bsdf.location = (0, 300)
    links.new(socket(bsdf.outputs, "BSDF"), socket(output.inputs, "Surface"))
    if not maps:
        return material

    def image_node(key, row):
        node = nodes.new("ShaderNodeTexImage")
        node.name = node.label = NODE_NAMES[key]
        node.image = load_map(maps[key], key, name)
        node.location = (IMAGE_COLUMN_X, 700 - row * IMAGE_NODE_STEP)
        return node

    albedo, ao, metallic, roughness, normal = (image_node(key, row) for row, key in enumerate(
        ("albedo", "ao", "metallic", "roughness", "normal")))

    base_color = socket(bsdf.inputs, "Base Color")
    if ao_into_base_color:
        mix, a, b, result = _multiply_node(nodes)
        mix.name = mix.label = NODE_NAMES["ao_multiply"]
        mix.location = (-300, albedo.location.y)
        links.new(albedo.outputs["Color"], a)
        links.new(ao.outputs["Color"], b)
        links.new(result, base_color)
    else:
        links.new(albedo.outputs["Color"], base_color)
    links.new(metallic.outputs["Color"], socket(bsdf.inputs, "Metallic"))
    links.new(roughness.outputs["Color"], socket(bsdf.inputs, "Roughness"))
    normal_map = nodes.new("ShaderNodeNormalMap")
    normal_map.name = normal_map.label = NODE_NAMES["normal_map"]
    normal_map.space = "TANGENT"
    normal_map.uv_map = uv_map
    normal_map.location = (-300, normal.location.y)
    links.new(normal.outputs["Color"], socket(normal_map.inputs, "Color"))
    links.new(socket(normal_map.outputs, "Normal"), socket(bsdf.inputs, "Normal"))
    return material


def map_paths(folder, manifest):
    """{map: absolute path} from the manifest's textures; {} for an untextured result; None when the
    manifest lists only some of the maps (a result this importer cannot wire)."""
    textures = manifest.get("textures") or {}
    if not textures:
        return {}
    if not all(textures.get(key) for key in MAP_COLORSPACE):
        return None
    return {key: os.path.join(folder, textures[key]) for key in MAP_COLORSPACE}
