"""Request field ranges for the sidebar and the quality presets (no bpy, so tests can check them).

The ranges repeat DESIGN.md's contract table because Blender properties need them at class
definition; tests/test_addon_units.py checks them against shared/request.py.
"""

# name: (default, min, max)
NUMERIC = {
    "seed": (1234, 0, 2 ** 31 - 1),      # Blender ints are 32-bit signed; the contract allows up to 2^32-1
    "octree_resolution": (256, 64, 512),
    "num_inference_steps": (5, 1, 100),
    "guidance_scale": (5.0, 0.1, 20.0),
    "face_count": (40000, 1000, 200000),
}
TEXTURE_SIZES = (256, 512, 1024, 2048, 4096)
DEFAULT_TEXTURE_SIZE = 1024

# A preset writes these fields; the advanced panel shows (and may change) the result.
PRESETS = {
# Steps are left to the engine (the contract's null: 50 for Hunyuan's standard DiTs, 5 for turbo ones).
    "FAST": {"face_count": 10000, "texture_size": 512, "octree_resolution": 192},
    "BALANCED": {"face_count": 40000, "texture_size": 1024, "octree_resolution": 256},
    "HIGH": {"face_count": 100000, "texture_size": 2048, "octree_resolution": 384},
}
