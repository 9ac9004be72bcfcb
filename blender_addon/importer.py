"""Bring a finished result into the scene: check its files, run Blender's glTF importer, replace the
importer's material with ours (material.py), name, place and size the object.

Any failure removes whatever the import created and restores the selection, so the scene is left as
it was. Callers that want one undo step run this inside an operator with the UNDO flag.
"""

import os
import re

import bpy
from mathutils import Matrix, Vector

from .contract import Gen3DError, errors, manifest as contract_manifest
from .material import build_material, map_paths
from .naming import free_name, rename

# Datablock collections the glTF importer may add to; whatever it added is removed again on failure
# and the importer's own materials and images are removed once ours replaces them.
_TRACKED = ("objects", "meshes", "materials", "images", "textures", "cameras", "lights", "collections")
GENERATED_SIZE = 2.0            # DESIGN.md: results fit [-1, 1]^3
_FOLDER_SUFFIX = re.compile(r"-\d{8}-\d{6}-[0-9a-f]{6}$")


def result_folder(path):
    """The job folder for a path to the folder itself or to any file in it (meta.json)."""
    path = os.path.abspath(bpy.path.abspath(path) if path.startswith("//") else os.path.expanduser(path))
    return path if os.path.isdir(path) else os.path.dirname(path)


def name_from_folder(folder):
    """The image name a job folder was made for (<name>-<date>-<time>-<id>, or just <name> in batches)."""
    return _FOLDER_SUFFIX.sub("", os.path.basename(os.path.normpath(folder))) or "Gen3D"


def read_result(path):
    """(folder, manifest) of a complete, undamaged result. Raises Gen3DError saying what is wrong."""
    folder = result_folder(path)
    manifest = contract_manifest.read_manifest(folder)
    damaged = contract_manifest.verify_files(folder, manifest)
    if damaged:
        raise Gen3DError(errors.STORAGE, "The result in %s is incomplete: %s %s missing or damaged (size or "
                         "checksum differs from meta.json). Generate it again." % (
                             folder, ", ".join(sorted(damaged)), "is" if len(damaged) == 1 else "are"),
                         retryable=False)
    return folder, manifest


def ensure_gltf_importer():
    import addon_utils
    if not addon_utils.check("io_scene_gltf2")[1]:
        addon_utils.enable("io_scene_gltf2", default_set=False)


# The glTF importer loads its modules (and numpy) on first use, a few tenths of a second; warm_up()
# does that when Generate is pressed, so the import when the job finishes is quick.
_GLTF_IMPORT_MODULES = ("io_scene_gltf2.io.imp.gltf2_io_gltf",
                        "io_scene_gltf2.blender.imp.blender_gltf",         # Blender 4.x
                        "io_scene_gltf2.blender.imp.gltf2_blender_gltf")   # Blender 3.x


def warm_up():
    import importlib
    ensure_gltf_importer()
    for name in ("numpy",) + _GLTF_IMPORT_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def _gltf_options():
    # Images are replaced by the result's PNG files right away, so packing the GLB's copies is wasted work.
    names = {prop.identifier for prop in bpy.ops.import_scene.gltf.get_rna_type().properties}
    return {"import_pack_images": False} if "import_pack_images" in names else {}


def _last_exception(text):
    """'SomeError: what' from a traceback Blender wraps into a RuntimeError, else its first line."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b.*:", line) and not line.startswith("Error: Python"):
            return line
    return lines[0] if lines else "unknown error"


class _numpy_aliases:
    """Blender 3.4's glTF importer uses np.bool, which numpy 1.24 to 1.26 do not have (Debian 12 ships
    exactly that pair). Put the alias back for the duration of the import only."""

    def __enter__(self):
        self.added = False
        if bpy.app.version < (3, 6, 0):
            try:
                import numpy
            except ImportError:
                return self
            if "bool" not in numpy.__dict__:    # hasattr would warn on numpy 1.24+
                numpy.bool = bool
                self.added = True
        return self

    def __exit__(self, *_exc):
        if self.added:
            import numpy
            del numpy.bool


def _run_gltf_importer(glb):
    try:
        with _numpy_aliases():
            result = bpy.ops.import_scene.gltf(filepath=glb, **_gltf_options())
    except RuntimeError as exc:
        if "No module named 'numpy'" in str(exc):
            # Debian's blender package does not pull in numpy, which Blender's glTF importer needs.
            raise Gen3DError(errors.INTERNAL, "Blender's glTF importer needs numpy, which this Blender's Python "
                             "lacks. Install it (Debian/Ubuntu: sudo apt-get install python3-numpy) or use a "
                             "Blender from blender.org.", retryable=False)
        raise Gen3DError(errors.INVALID_INPUT, "Blender's glTF importer could not read %s (%s)."
                         % (glb, _last_exception(exc)), retryable=False)
    if "FINISHED" not in result:
        raise Gen3DError(errors.INVALID_INPUT, "Blender's glTF importer could not read %s." % glb, retryable=False)


class _Snapshot:
    """What existed before the import, to tell the importer's additions apart."""

    def __init__(self, context):
        self.ids = {attr: {block.as_pointer() for block in getattr(bpy.data, attr)} for attr in _TRACKED}
        # A view layer not yet updated after removals lists None for the removed objects.
        self.selected = [obj.name for obj in context.view_layer.objects if obj is not None and obj.select_get()]
        active = context.view_layer.objects.active
        self.active = active.name if active else None

    def added(self, attr):
        known = self.ids[attr]
        return [block for block in getattr(bpy.data, attr) if block.as_pointer() not in known]

    def roll_back(self, context):
        for attr in _TRACKED:
            collection = getattr(bpy.data, attr)
            for block in self.added(attr):
                try:
                    collection.remove(block)
                except (ReferenceError, RuntimeError):
                    pass
        for obj in context.view_layer.objects:
            obj.select_set(obj.name in self.selected)
        context.view_layer.objects.active = bpy.data.objects.get(self.active) if self.active else None


def result_warnings(manifest):
    """meta.json's plain-words doubts about the result (an unsure background removal); [] for none or
    for results from before the field existed."""
    warnings = manifest.get("warnings") if isinstance(manifest, dict) else None
    return [str(w) for w in warnings] if isinstance(warnings, list) else []


def import_result(context, path, name=None, options=None, location=None):
    """Import the result at `path` (job folder or its meta.json); returns the new top-level object.

    name: object name (default: the image name from the folder's name). options: ImportSettings.
    location: where to put it; default the 3D cursor when options.place_at_cursor, else the origin."""
    from .settings import ImportSettings
    options = options or ImportSettings()
    folder, manifest = read_result(path)
    maps = map_paths(folder, manifest)
    if maps is None:
        raise Gen3DError(errors.INVALID_INPUT, "meta.json in %s lists only some of the texture maps; this result "
                         "cannot be wired. Generate it again." % folder, retryable=False)
    name = name or name_from_folder(folder)
    if location is None:
        location = context.scene.cursor.location.copy() if options.place_at_cursor else Vector((0.0, 0.0, 0.0))

    snapshot = _Snapshot(context)
    try:
        ensure_gltf_importer()
        glb = os.path.join(folder, manifest["mesh"].get("file") or contract_manifest.MESH_FILE)
        _run_gltf_importer(glb)
        new_objects = snapshot.added("objects")
        meshes = [obj for obj in new_objects if obj.type == "MESH"]
        if not meshes:
            raise Gen3DError(errors.INVALID_INPUT, "%s holds no mesh." % glb, retryable=False)
        obj = _single_root(context, new_objects, name)
        importer_leftovers = snapshot.added("materials") + snapshot.added("images")
        material = build_material(free_name(bpy.data.materials, "Gen3D_%s" % name), maps, _uv_map(meshes[0]),
                                  options.ao_into_base_color)
        for mesh_obj in meshes:
            mesh_obj.data.materials.clear()
            mesh_obj.data.materials.append(material)
        if options.pack_textures:
            for node in material.node_tree.nodes:
                if node.bl_idname == "ShaderNodeTexImage" and node.image is not None:
                    node.image.pack()
        for block in importer_leftovers:
            (bpy.data.materials if isinstance(block, bpy.types.Material) else bpy.data.images).remove(block)
        _size(obj, options.target_size)
        for new in new_objects:
            new.rotation_mode = "XYZ"     # the importer leaves quaternions; artists rotate in Euler
        _place(context, obj, location)
        obj["gen3d_folder"] = folder
        obj["gen3d_job_id"] = manifest.get("job_id", "")
        warnings = result_warnings(manifest)
        if warnings:
            obj["gen3d_warning"] = " ".join(warnings)   # kept with the object; the caller shows it
        for other in context.view_layer.objects:
            other.select_set(False)
        for new in new_objects:
            if new.name in context.view_layer.objects:
                new.select_set(True)
        context.view_layer.objects.active = obj
        context.view_layer.update()       # so obj.dimensions and matrix_world are current for the caller
        return obj
    except Exception as exc:
        snapshot.roll_back(context)
        if isinstance(exc, Gen3DError):
            raise
        raise Gen3DError(errors.INTERNAL, "Importing %s failed (%s: %s); the scene was left unchanged."
                         % (folder, type(exc).__name__, exc), retryable=False) from exc


def _uv_map(obj):
    layers = obj.data.uv_layers
    return layers.active.name if layers.active else (layers[0].name if len(layers) else "")


def _single_root(context, new_objects, name):
    """The one top-level object of the import, named after the image (an Empty parents several).
    Only free names are given, so no existing datablock is renamed."""
    roots = [obj for obj in new_objects if obj.parent is None]
    if len(roots) == 1:
        root = roots[0]
    else:
        root = bpy.data.objects.new(free_name(bpy.data.objects, name), None)
        context.collection.objects.link(root)
        for obj in roots:
            obj.parent = root
    rename(root, bpy.data.objects, name)
    if root.type == "MESH":
        rename(root.data, bpy.data.meshes, name)
    return root


def _size(obj, target_size):
    if target_size and target_size > 0:
        size = max(obj.dimensions) if obj.type == "MESH" else GENERATED_SIZE
        factor = target_size / size if size > 0 else 1.0
        if obj.type == "MESH" and not obj.children:
            obj.data.transform(Matrix.Scale(factor, 4))   # bake it in: the object keeps scale 1
            obj.data.update()
        else:
            obj.scale = obj.scale * factor


def world_bounds(obj):
    """(low, high) corners of the world-space box around obj's meshes and their children; None if none."""
    corners = []
    for each in [obj] + list(obj.children_recursive if hasattr(obj, "children_recursive") else _descendants(obj)):
        if each.type == "MESH":
            corners += [each.matrix_world @ Vector(corner) for corner in each.bound_box]
    if not corners:
        return None
    return (Vector([min(c[i] for c in corners) for i in range(3)]),
            Vector([max(c[i] for c in corners) for i in range(3)]))


def _descendants(obj):
    for child in obj.children:
        yield child
        yield from _descendants(child)


def _place(context, obj, location):
    """Stand the object on `location`: lowest point at its z, centred on it in x and y. A single mesh
    gets its origin moved to that base point, so it also rotates and scales about its base."""
    context.view_layer.update()
    location = Vector(location)
    bounds = world_bounds(obj)
    if bounds is None:
        obj.location = location
        return
    low, high = bounds
    base = Vector(((low.x + high.x) / 2, (low.y + high.y) / 2, low.z))
    if obj.type == "MESH" and not obj.children and obj.parent is None:
        local_base = obj.matrix_world.inverted() @ base
        obj.data.transform(Matrix.Translation(-local_base))
        obj.data.update()
        obj.location = location
    else:
        obj.location = obj.location + (location - base)
