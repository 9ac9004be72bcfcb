"""Gen3D for Blender: turn one image into a textured, PBR-shaded object from the 3D viewport sidebar.

The add-on runs jobs on a local worker process (`python -m backend_local serve`) or a remote endpoint,
and imports the result through Blender's glTF importer with a Principled BSDF material.
"""

# Read by Blender < 4.2 without running this file; build_addon.py stamps "version" from shared/version.py.
bl_info = {
    "name": "Gen3D",
    "author": "Gen3D developers",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "View3D > Sidebar > Gen3D",
    "description": "Image to textured 3D object, generated locally or on a remote endpoint",
    "category": "3D View",
}


def register():
    # Imported here, not at module level, so that the job code (jobs.py, local_client.py...) can be
    # imported and tested without Blender.
    from . import registration
    registration.register()


def unregister():
    from . import registration
    registration.unregister()
