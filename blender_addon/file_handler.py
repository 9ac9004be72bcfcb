"""Drop an image file on the 3D viewport to generate from it (Blender 4.1+ file handlers).

When another handler also takes images (e.g. "Image as Plane"), Blender asks which one to use.
"""

import bpy

AVAILABLE = hasattr(bpy.types, "FileHandler")
EXTENSIONS = ".png;.jpg;.jpeg;.webp"

classes = ()
if AVAILABLE:
    class GEN3D_FH_image(bpy.types.FileHandler):
        bl_idname = "GEN3D_FH_image"
        bl_label = "Generate 3D object (Gen3D)"
        bl_import_operator = "gen3d.generate_dropped"
        bl_file_extensions = EXTENSIONS

        @classmethod
        def poll_drop(cls, context):
            return context.area is not None and context.area.type == "VIEW_3D"

    classes = (GEN3D_FH_image,)
