"""Request field ranges for the sidebar and the quality presets (no bpy, so tests can check them).

The ranges come from the contract (shared/request.py); Blender properties need them when their
classes are defined.
"""

from .contract import request as contract_request

BLENDER_INT_MAX = 2 ** 31 - 1        # Blender ints are 32-bit signed; the contract's seed goes to 2^32-1

# The Steps field's value when "Engine's steps" is switched off: a Blender property needs a number,
# while the contract's default is null (the engine's own tuned count, 50 for Hunyuan's standard DiTs).
MANUAL_STEPS = 50

# name: (default, min, max)
NUMERIC = {name: (MANUAL_STEPS if default is None else default, low,
                  min(high, BLENDER_INT_MAX) if isinstance(high, int) else high)
           for name, (default, low, high) in contract_request.RANGES.items() if name != "texture_size"}
_SIZE_DEFAULT, _SIZE_LOW, _SIZE_HIGH = contract_request.RANGES["texture_size"]
TEXTURE_SIZES = tuple(2 ** n for n in range(_SIZE_LOW.bit_length() - 1, _SIZE_HIGH.bit_length()))
DEFAULT_TEXTURE_SIZE = _SIZE_DEFAULT

# A preset writes these fields; the advanced panel shows (and may change) the result.
PRESETS = {
# Steps are left to the engine (the contract's null: 50 for Hunyuan's standard DiTs, 5 for turbo ones).
    "FAST": {"face_count": 10000, "texture_size": 512, "octree_resolution": 192},
    "BALANCED": {"face_count": 40000, "texture_size": 1024, "octree_resolution": 256},
    "HIGH": {"face_count": 100000, "texture_size": 2048, "octree_resolution": 384},
}
CUSTOM = "CUSTOM"                    # the preset once a field was edited by hand


def matching_preset(values):
    """The preset whose fields all equal `values` (a dict), else CUSTOM."""
    for name, fields in PRESETS.items():
        if all(values.get(key) == value for key, value in fields.items()):
            return name
    return CUSTOM


def engine_label(name):
    return contract_request.ENGINE_LABELS.get(name, name)


def uses_sampler(engine):
    """Whether an engine reads num_inference_steps and guidance_scale."""
    return engine not in contract_request.SAMPLERLESS_ENGINES
